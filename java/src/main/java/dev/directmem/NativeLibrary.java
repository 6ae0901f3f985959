package dev.directmem;

import java.io.File;
import java.util.ArrayList;
import java.util.List;

/** Loads libdirectmem: the file named by {@code -Ddirectmem.library.path}, else {@code System.loadLibrary("directmem")}. */
final class NativeLibrary {
    static final String PATH_PROPERTY = "directmem.library.path";

    private NativeLibrary() {}

    static void load() {
        String path = System.getProperty(PATH_PROPERTY);
        try {
            if (path != null) {
                System.load(new File(path).getAbsolutePath());
            } else {
                System.loadLibrary("directmem");
            }
        } catch (IllegalCallerException e) { // JDK 24+ under --illegal-native-access=deny
            IllegalCallerException failure = new IllegalCallerException("directmem loads a JNI library, which this JVM "
                    + "allows only to modules granted native access: run with --enable-native-access=ALL-UNNAMED "
                    + "(class path) or --enable-native-access=<your module>; an executable jar can say "
                    + "'Enable-Native-Access: ALL-UNNAMED' in its manifest");
            failure.initCause(e);
            throw failure;
        } catch (UnsatisfiedLinkError e) {
            UnsatisfiedLinkError failure = new UnsatisfiedLinkError(
                    "cannot load libdirectmem; tried: " + String.join(", ", tried(path))
                            + " (set -D" + PATH_PROPERTY + "=/path/to/libdirectmem.so or -Djava.library.path)");
            failure.addSuppressed(e);
            throw failure;
        }
    }

    private static List<String> tried(String path) {
        List<String> tried = new ArrayList<>();
        if (path != null) {
            tried.add(new File(path).getAbsolutePath() + " (from -D" + PATH_PROPERTY + ")");
            return tried;
        }
        String name = System.mapLibraryName("directmem");
        for (String dir : System.getProperty("java.library.path", "").split(File.pathSeparator)) {
            if (!dir.isEmpty()) tried.add(new File(dir, name).getPath());
        }
        if (tried.isEmpty()) tried.add(name + " (java.library.path is empty)");
        return tried;
    }
}
