package dev.directmem;

/**
 * Blocks that no buffer tracks and that could not be freed when that was found out, because the thread
 * was at the edge of its stack: a {@code StackOverflowError} in making or tracking a new buffer, and again
 * in freeing its block; or in {@link DirectMemory#free} once the block was taken out of
 * {@link LiveBlocks}. Without this they stayed reserved for good. The cleaner thread (at its tick) and
 * every reclaim round free them.
 *
 * <p>Recording must not need stack either, so it is not a method: where a call to {@code Native.free0}
 * threw {@code StackOverflowError} (the native code did not run), the caller stores the address itself
 * with plain bytecodes, {@code synchronized (Orphans.ADDRESSES) { if (Orphans.count < ADDRESSES.length)
 * ADDRESSES[Orphans.count++] = address; }}. Initialised with {@link DirectMemory}, so touching it never
 * runs a class initialiser then.
 */
final class Orphans {
    /** More than this many at once (each needs its own stack overflow) would be leaked, as before. */
    static final long[] ADDRESSES = new long[1024];
    /** Guarded by {@link #ADDRESSES}. */
    static int count;

    private Orphans() {}

    /** Frees every recorded block; on a thread with stack to spare. */
    static void freeAll() {
        while (true) {
            long address;
            synchronized (ADDRESSES) {
                if (count == 0) return;
                address = ADDRESSES[--count];
            }
            Block.freeBlock(address, false);
        }
    }
}
