package dev.directmem;

import java.nio.ByteBuffer;

/** The native half (src/jni.rs). Statuses are libdirectmem's dm_status values. */
final class Native {
    static final int OK = 0, INVALID_ARGUMENT = 1, LIMIT = 2, NO_MEMORY = 3, NOT_LIVE = 4, INTERNAL = 5;

    private Native() {}

    static {
        NativeLibrary.load();
    }

    /**
     * A tracked, zeroed block wrapped in a direct buffer, or null with the failing status in out[0]; on
     * success out[0] is the block's cleaner handle. Without {@code wait}, a reservation that does not
     * fit fails at once with LIMIT instead of reclaiming and waiting.
     */
    static native ByteBuffer allocate0(int capacity, int alignment, boolean wait, long[] out);

    /** dm_clean: true if this call released the block. */
    static native boolean clean0(long cleaner);

    /** The buffer's native address (0 if it is not direct). */
    static native long address0(ByteBuffer buffer);

    static native long limit0();

    static native void setLimit0(long bytes);

    static native void setReclaimTimeout0(int millis);

    /**
     * Test support: a thread the JVM has never seen allocates and frees {@code size} bytes {@code rounds}
     * times, as a C thread in this process would, then lives on for {@code lingerMillis}; returns the
     * first failing status, or OK.
     */
    static native int allocateOnNativeThread0(long size, int rounds, int lingerMillis);

    /** dm_stats fields, in header order. */
    static native long[] stats0();

    /** The library's size parser (bytes, or k/m/g suffixes); -1 if the text does not parse. */
    static native long parseSize0(String text);

    /** Makes the library call {@code Reclaimer.reclaim(long)} when a reservation does not fit. */
    static native void installReclaimHook0();
}
