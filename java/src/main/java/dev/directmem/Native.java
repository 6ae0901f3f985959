package dev.directmem;

import java.nio.ByteBuffer;

/**
 * The native half (src/jni.rs). Status codes are looked up by name in the library's one table, so
 * Java cannot drift from C's {@code dm_status}; {@link #message} is the library's text for each.
 */
final class Native {
    static {
        NativeLibrary.load();
        checkVersion();
    }

    static final int OK = 0;
    static final int INVALID_ARGUMENT = status("INVALID_ARGUMENT");
    static final int LIMIT = status("LIMIT");
    static final int NO_MEMORY = status("NO_MEMORY");
    static final int NOT_LIVE = status("NOT_LIVE");
    static final int INTERNAL = status("INTERNAL");

    private Native() {}

    private static int status(String name) {
        int code = statusCode0(name);
        if (code <= 0) {
            throw new IllegalStateException("libdirectmem has no status named " + name + ": a library of another version?");
        }
        return code;
    }

    /**
     * The jar records the library version it was built with ({@code dev/directmem/version}, written by
     * scripts/build-jar.sh); a library of another version, found first on java.library.path or loaded
     * by native code before, is refused with both versions named. Classes not from such a jar skip the check.
     */
    private static void checkVersion() {
        String built = builtFor();
        String loaded = version0();
        if (built != null && !built.equals(loaded)) {
            throw new UnsatisfiedLinkError("libdirectmem " + loaded + " was loaded, but this directmem jar was built for "
                    + built + ": put the matching library first (-D" + NativeLibrary.PATH_PROPERTY
                    + "=...), or drop the other one from java.library.path so that the jar's own copy is used"
                    + " (native code that loaded a libdirectmem before must load the matching one)");
        }
    }

    /** The library version this jar was built with, or null outside such a jar. */
    static String builtFor() {
        try (var in = Native.class.getResourceAsStream("version")) {
            return in == null ? null : new String(in.readAllBytes(), java.nio.charset.StandardCharsets.UTF_8).trim();
        } catch (java.io.IOException e) {
            return null;
        }
    }

    /** The library's version (Cargo.toml's). */
    static native String version0();

    /** The library's description of a status code. */
    static String message(int status) {
        return statusMessage0(status);
    }

    /**
     * A tracked, zeroed block's address (> 0), or minus the failing status. Without {@code wait}, a
     * reservation that does not fit fails at once with LIMIT instead of reclaiming and waiting.
     */
    static native long allocate0(int capacity, int alignment, boolean wait);

    /** Frees the block at {@code address}: OK, or the failing status (NOT_LIVE if it is not live). */
    static native int free0(long address);

    /** JNI's NewDirectByteBuffer over {@code capacity} bytes at {@code address}: a buffer with no attachment. */
    static native ByteBuffer wrap0(long address, int capacity);

    /** The buffer's native address (0 if it is not direct). */
    static native long address0(ByteBuffer buffer);

    static native long limit0();

    static native void setLimit0(long bytes);

    /** Bytes that fit under the limit now. */
    static native long available0();

    static native void setReclaimTimeout0(int millis);

    /**
     * Gives back the memory the library keeps for reuse whose time is up (empty slabs kept over
     * 100 ms), which otherwise waits for its next allocations; the bytes.
     */
    static native long decay0();

    /** Gives back all the memory the library keeps for reuse, every thread's ({@code dm_trim}); the bytes. */
    static native long trim0();

    /** Writes each counter of the library into the field of {@code target} with the same name. */
    static native void statsInto0(StatsFields target);

    /** The code of the status named so in the library's table, or -1. */
    static native int statusCode0(String name);

    static native String statusMessage0(int status);

    /** A full GC through JVMTI, which {@code -XX:+DisableExplicitGC} does not turn off; 0 on success. */
    static native int forceGc0();

    /**
     * Test support, present only in a library built with the {@code test-natives} feature (the test
     * suite's; calling it elsewhere throws UnsatisfiedLinkError): a thread the JVM has never seen allocates and frees {@code size} bytes {@code rounds}
     * times, as a C thread in this process would, then lives on for {@code lingerMillis}; returns the
     * first failing status, or OK.
     */
    static native int allocateOnNativeThread0(long size, int rounds, int lingerMillis);

    /** The library's size parser (bytes, or k/m/g/t suffixes); -1 if the text does not parse. */
    static native long parseSize0(String text);

    /** Makes the library call {@code Reclaimer.reclaim(long)} when a reservation does not fit. */
    static native void installReclaimHook0();
}
