package dev.directmem;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Loads libdirectmem, in this order:
 * <ol>
 *   <li>the one this process has loaded already, if any: native code linked against it (a JNI library
 *       of the application's, a program that embeds the JVM) or preloaded; a second copy would have a
 *       quota and stats of its own, apart from that code's;</li>
 *   <li>the exact file named by {@code -Ddirectmem.library.path}, if set (nothing else is tried);</li>
 *   <li>{@code System.loadLibrary("directmem")}, that is {@code java.library.path};</li>
 *   <li>the copy inside this jar, {@code /dev/directmem/native/<os>-<arch>/libdirectmem.so}, extracted once
 *       to {@code <java.io.tmpdir>/directmem-<user>/<sha-256 of the file>/} (private to the user; named by
 *       its content, so an upgrade never loads a stale copy, and JVMs starting at once each write a
 *       temporary file and move it into place atomically).</li>
 * </ol>
 * A failure lists every place tried, each with its own error attached. A JVM holds one copy of the
 * library, for the class loader that loaded it first (JNI binds a library to one loader): a second
 * loader with its own copy of this jar is refused with that said, and tries nothing else, since a
 * copy from another place would be a second library with a quota of its own.
 */
final class NativeLibrary {
    static final String PATH_PROPERTY = "directmem.library.path";
    /** The folder inside the jar for this platform; more platforms join as more folders. */
    static final String RESOURCE = "/dev/directmem/native/" + platform() + "/" + System.mapLibraryName("directmem");

    private NativeLibrary() {}

    static void load() {
        String path = System.getProperty(PATH_PROPERTY);
        List<String> tried = new ArrayList<>();
        List<Throwable> failures = new ArrayList<>();
        try {
            String inProcess = loadedInProcess();
            if (inProcess != null) {
                if (path != null && !sameFile(path, inProcess)) {
                    Log.log(System.Logger.Level.WARNING, "ignoring -D" + PATH_PROPERTY + "=" + path + ": this process has "
                            + inProcess + " loaded already, and a second copy would have a quota of its own");
                }
                tried.add(inProcess + " (loaded in this process already)");
                loadFile(inProcess);
                return;
            }
            if (path != null) {
                tried.add(new File(path).getAbsolutePath() + " (from -D" + PATH_PROPERTY + ")");
                loadFile(new File(path).getAbsolutePath());
                return;
            }
            try {
                System.loadLibrary("directmem");
                return;
            } catch (UnsatisfiedLinkError e) {
                refuseIfLoadedElsewhere(e);
                tried.addAll(libraryPath());
                failures.add(e);
            }
            tried.add("the copy in the jar, " + RESOURCE);
            Path extracted = extract();
            if (extracted != null) {
                tried.set(tried.size() - 1, tried.get(tried.size() - 1) + ", extracted to " + extracted);
                loadFile(extracted.toString());
                return;
            }
            failures.add(new UnsatisfiedLinkError("no " + RESOURCE + " in the jar (a jar built without the native library?)"));
        } catch (LoadedElsewhere e) {
            throw e;
        } catch (IllegalCallerException e) { // JDK 24+ under --illegal-native-access=deny
            IllegalCallerException failure = new IllegalCallerException("directmem loads a JNI library, which this JVM "
                    + "allows only to modules granted native access: run with --enable-native-access=ALL-UNNAMED "
                    + "(class path) or --enable-native-access=dev.directmem (module path); an executable jar can say "
                    + "'Enable-Native-Access: ALL-UNNAMED' in its manifest");
            failure.initCause(e);
            throw failure;
        } catch (UnsatisfiedLinkError | IOException e) {
            failures.add(e);
        }
        UnsatisfiedLinkError failure = new UnsatisfiedLinkError("cannot load libdirectmem; tried: " + String.join(", ", tried)
                + " (set -D" + PATH_PROPERTY + "=/path/to/libdirectmem.so or -Djava.library.path)");
        failures.forEach(failure::addSuppressed);
        throw failure;
    }

    /**
     * The file of a libdirectmem that this process has mapped already (Linux's {@code /proc/self/maps}),
     * else null. {@code System.load} of that path gives the library that is there, not a second copy.
     */
    static String loadedInProcess() {
        // Read through java.io, not Files: NIO's reads take a temporary direct buffer, which a JVM run
        // with -XX:MaxDirectMemorySize=0 refuses with an OutOfMemoryError.
        List<String> maps = new ArrayList<>();
        try (java.io.BufferedReader in = new java.io.BufferedReader(new java.io.FileReader("/proc/self/maps"))) {
            for (String line; (line = in.readLine()) != null;) maps.add(line);
        } catch (IOException e) {
            return null; // not Linux: the library is not built for it
        }
        for (String line : maps) {
            String[] fields = line.trim().split("\\s+", 6); // address perms offset device inode path
            if (fields.length < 6) continue;
            String file = fields[5];
            String name = file.substring(file.lastIndexOf('/') + 1);
            if (name.startsWith("libdirectmem") && name.contains(".so") && !file.endsWith(" (deleted)")) return file;
        }
        return null;
    }

    private static boolean sameFile(String a, String b) {
        try {
            return Files.isSameFile(Path.of(a), Path.of(b));
        } catch (IOException | RuntimeException e) {
            return false;
        }
    }

    /** {@code System.load}, refused at once when another class loader has the library. */
    private static void loadFile(String file) {
        try {
            System.load(file);
        } catch (UnsatisfiedLinkError e) {
            refuseIfLoadedElsewhere(e);
            throw e;
        }
    }

    /** The JDK's words when a library is loaded already, by another class loader. */
    static final String LOADED_ELSEWHERE = "already loaded in another classloader";

    private static void refuseIfLoadedElsewhere(UnsatisfiedLinkError e) {
        if (e.getMessage() != null && e.getMessage().contains(LOADED_ELSEWHERE)) throw new LoadedElsewhere(e);
    }

    /** The library is loaded already, by another class loader: nothing else is tried. */
    private static final class LoadedElsewhere extends UnsatisfiedLinkError {
        private static final long serialVersionUID = 1L;

        LoadedElsewhere(UnsatisfiedLinkError cause) {
            super("libdirectmem is loaded in this JVM already, by another class loader, and JNI lets one class "
                    + "loader use a library: load directmem's classes once, from a class loader every user of it "
                    + "shares (the application class path, or an application server's shared library folder), so "
                    + "that all of them use one library and one quota");
            initCause(cause);
        }
    }

    private static List<String> libraryPath() {
        List<String> tried = new ArrayList<>();
        String name = System.mapLibraryName("directmem");
        for (String dir : System.getProperty("java.library.path", "").split(File.pathSeparator)) {
            if (!dir.isEmpty()) tried.add(new File(dir, name).getPath());
        }
        if (tried.isEmpty()) tried.add(name + " (java.library.path is empty)");
        return tried;
    }

    /** The library in the jar, as a file of its own; null if the jar has none. */
    private static Path extract() throws IOException {
        byte[] library;
        try (InputStream in = NativeLibrary.class.getResourceAsStream(RESOURCE)) {
            if (in == null) return null;
            library = in.readAllBytes();
        }
        Path base = Path.of(System.getProperty("directmem.extractDir",
                System.getProperty("java.io.tmpdir") + File.separator + "directmem-" + System.getProperty("user.name")));
        Path dir = base.resolve(contentName(library));
        Path target = dir.resolve(System.mapLibraryName("directmem"));
        if (Files.isRegularFile(target) && Files.size(target) == library.length) {
            return target; // named by its content: a copy that is there whole is this very library
        }
        Files.createDirectories(dir);
        try {
            Files.setPosixFilePermissions(base, PosixFilePermissions.fromString("rwx------"));
        } catch (UnsupportedOperationException | IOException ignored) {
            // not POSIX, or another user's folder: the content check above still holds
        }
        Path temporary = Files.createTempFile(dir, "libdirectmem", ".tmp");
        try {
            Files.write(temporary, library);
            Files.move(temporary, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(temporary);
        }
        return target;
    }

    /**
     * The library's SHA-256 in hex: the one {@code build-jar.sh} wrote beside it in the jar, else
     * computed here. Reading it spares every JVM hashing 4 MB at start and bringing up the security
     * providers to do it, which also stay loaded, and every full GC walked them (from the jar, 3.3-3.8 ms
     * per {@code System.gc()} in a small program, against 2.4-2.9 ms with the library on
     * {@code java.library.path}).
     */
    private static String contentName(byte[] library) throws IOException {
        try (InputStream in = NativeLibrary.class.getResourceAsStream(RESOURCE + ".sha256")) {
            if (in != null) {
                String hex = new String(in.readAllBytes(), java.nio.charset.StandardCharsets.US_ASCII).trim();
                if (hex.matches("[0-9a-f]{64}")) return hex;
            }
        }
        return sha256(library);
    }

    private static String sha256(byte[] bytes) {
        try {
            StringBuilder hex = new StringBuilder();
            for (byte b : MessageDigest.getInstance("SHA-256").digest(bytes)) hex.append(String.format("%02x", b));
            return hex.toString();
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e); // every JDK has SHA-256
        }
    }

    /** {@code linux-x86_64}, {@code linux-aarch64}, ...: the resource folder of this platform. */
    static String platform() {
        String os = System.getProperty("os.name", "").toLowerCase(Locale.ROOT).replaceAll("\\s", "");
        String arch = System.getProperty("os.arch", "").toLowerCase(Locale.ROOT);
        if (arch.equals("amd64")) arch = "x86_64";
        return os + "-" + arch;
    }
}
