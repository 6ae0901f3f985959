package dev.directmem;

import static org.junit.jupiter.api.Assertions.*;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** One jar that just works: the library inside it is found with no setting, on the JDK running the suite. */
class JarTest {
    private static Process start(Path extractDir) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(System.getProperty("java.home") + "/bin/java"));
        if (Runtime.version().feature() >= 22) cmd.add("--enable-native-access=ALL-UNNAMED");
        cmd.addAll(List.of("-Ddirectmem.extractDir=" + extractDir, "-cp",
                System.getProperty("directmem.test.jar") + File.pathSeparator + System.getProperty("directmem.test.classes"),
                "dev.directmem.AllocateOnce"));
        return new ProcessBuilder(cmd).redirectErrorStream(true).start(); // no java.library.path given
    }

    private static String finish(Process p) throws Exception {
        assertTrue(p.waitFor(60, TimeUnit.SECONDS));
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.exitValue(), out);
        return out;
    }

    @Test
    void theJarAloneLoadsItsOwnLibrary() throws Exception {
        Path dir = Files.createTempDirectory("directmem-extract");
        String out = finish(start(dir));
        assertTrue(out.contains("freed true"), out);
        assertTrue(out.contains("count=0"), out);
        assertFalse(out.contains("WARNING"), out);
        List<Path> extracted;
        try (var files = Files.walk(dir)) {
            extracted = files.filter(f -> f.getFileName().toString().equals("libdirectmem.so")).toList();
        }
        assertEquals(1, extracted.size(), "extracted once");
        // Named by its content: the folder is the SHA-256 of the bytes extracted (build-jar.sh writes it
        // beside the library in the jar, so that no JVM hashes it at start).
        StringBuilder sha256 = new StringBuilder();
        for (byte b : java.security.MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(extracted.get(0)))) {
            sha256.append(String.format("%02x", b));
        }
        assertEquals(sha256.toString(), extracted.get(0).getParent().getFileName().toString());
    }

    @Test
    void twoJvmsStartingAtOnceOnAnEmptyFolderBothLoad() throws Exception {
        for (int round = 0; round < 3; round++) {
            Path dir = Files.createTempDirectory("directmem-extract");
            Process a = start(dir), b = start(dir);
            assertTrue(finish(a).contains("freed true"));
            assertTrue(finish(b).contains("freed true"));
            try (var files = Files.walk(dir)) {
                assertEquals(List.of(), files.filter(f -> f.toString().endsWith(".tmp")).toList(), "no temporary file left");
            }
        }
    }

    /**
     * Two applications in one server, each with its own copy of the jar: JNI binds a library to one
     * class loader, so the second is refused, with the reason said. With the library also on
     * java.library.path (the first loads it from there) the second used to load the jar's copy
     * instead: a second library in the JVM, with a quota of its own.
     */
    @Test
    void aSecondClassLoaderWithItsOwnCopyIsRefusedAndNeverLoadsASecondLibrary() throws Exception {
        for (boolean onLibraryPath : new boolean[] {false, true}) {
            List<String> cmd = new ArrayList<>(List.of(System.getProperty("java.home") + "/bin/java"));
            if (Runtime.version().feature() >= 22) cmd.add("--enable-native-access=ALL-UNNAMED");
            cmd.add("-Ddirectmem.extractDir=" + Files.createTempDirectory("directmem-extract"));
            cmd.add("-Djava.library.path=" + (onLibraryPath ? System.getProperty("directmem.test.libdir") : ""));
            cmd.addAll(List.of("-cp", System.getProperty("directmem.test.classes"), "dev.directmem.TwoLoaders",
                    System.getProperty("directmem.test.jar")));
            String out = finish(new ProcessBuilder(cmd).redirectErrorStream(true).start());
            assertTrue(out.contains("first: freed true"), out);
            assertTrue(out.contains("second: UnsatisfiedLinkError: libdirectmem is loaded in this JVM already, by another "
                    + "class loader"), out);
            assertTrue(out.contains("first again: freed true"), out);
        }
    }

    /**
     * Native code of the program's own, linked against libdirectmem (here: the library preloaded, from
     * a folder of its own), loaded it before the first use of {@code DirectMemory}: the Java side takes
     * that library, not the jar's copy or the one {@code -Ddirectmem.library.path} names, which would
     * be a second library in the process with a quota and stats of its own (as it was before).
     */
    @Test
    void aLibraryTheProcessLoadedAlreadyIsTheOneUsed() throws Exception {
        Path own = Files.createTempDirectory("directmem-own").resolve("libdirectmem.so");
        Files.copy(Path.of(System.getProperty("directmem.test.libdir"), "libdirectmem.so"), own);
        Path extractDir = Files.createTempDirectory("directmem-extract");
        for (boolean named : new boolean[] {false, true}) {
            List<String> cmd = new ArrayList<>(List.of(System.getProperty("java.home") + "/bin/java"));
            if (Runtime.version().feature() >= 22) cmd.add("--enable-native-access=ALL-UNNAMED");
            cmd.add("-Ddirectmem.extractDir=" + extractDir);
            if (named) cmd.add("-Ddirectmem.library.path=" + System.getProperty("directmem.test.libdir") + "/libdirectmem.so");
            cmd.addAll(List.of("-cp", System.getProperty("directmem.test.jar") + File.pathSeparator
                    + System.getProperty("directmem.test.classes"), "dev.directmem.OneLibrary"));
            ProcessBuilder child = new ProcessBuilder(cmd).redirectErrorStream(true);
            child.environment().put("LD_PRELOAD", own.toString());
            String out = finish(child.start());
            assertTrue(out.contains("freed true"), out);
            assertEquals(List.of("mapped " + own), out.lines().filter(l -> l.startsWith("mapped ")).toList(), out);
            assertEquals(named, out.contains("ignoring -Ddirectmem.library.path="), out);
        }
        try (var files = Files.walk(extractDir)) {
            assertEquals(List.of(), files.filter(Files::isRegularFile).toList(), "nothing extracted");
        }
    }

    @Test
    void theJarSaysWhichLibraryVersionItWasBuiltFor() {
        assertEquals(Native.version0(), Native.builtFor(), "the suite runs against the jar's own build");
    }
}
