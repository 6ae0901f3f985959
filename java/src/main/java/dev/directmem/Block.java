package dev.directmem;

import java.lang.ref.PhantomReference;
import java.lang.ref.ReferenceQueue;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.LongAdder;

/**
 * One Java buffer's block of the library, and the phantom reference that tells when the buffer is
 * unreachable, as the JDK's own {@code jdk.internal.ref.Cleaner} does for {@code DirectByteBuffer}.
 *
 * <p>Released exactly once: the block is first taken out of {@link LiveBlocks}, and only the one call
 * that takes it out frees it, whether that is {@link DirectMemory#free} or the {@link CleanerThread}
 * ({@link #release}) after the GC found the buffer unreachable. Until then {@code LiveBlocks} keeps
 * this reference reachable; afterwards nothing does, so the GC never enqueues a released block.
 */
final class Block extends PhantomReference<ByteBuffer> {
    private static final boolean LEAK_DETECTION = Boolean.getBoolean("directmem.leakDetection");
    static final LongAdder RECLAIMED_BY_GC = new LongAdder();
    /** Releases the library refused (a block freed twice): always 0 unless something is broken. */
    static final LongAdder FAILED_RELEASES = new LongAdder();

    final long address;
    final int capacity;
    /** Where the buffer was allocated, when leak detection is on. */
    final Throwable allocationSite;
    /** The next block in the same bucket of {@link LiveBlocks}. */
    Block next;

    Block(ByteBuffer buffer, long address, int capacity, ReferenceQueue<ByteBuffer> queue) {
        super(buffer, queue);
        this.address = address;
        this.capacity = capacity;
        this.allocationSite = LEAK_DETECTION ? new Throwable("direct buffer allocated here") : null;
    }

    /** After the GC found the buffer unreachable: frees the block unless that was done already; true if this call did. */
    boolean release() {
        if (!LiveBlocks.remove(this)) {
            return false;
        }
        freeBlock(address, false);
        return true;
    }

    /**
     * Gives the memory at {@code address} back; only for the caller that took its block out of
     * {@link LiveBlocks} (or out of {@link Orphans}). {@code explicit}: by {@link DirectMemory#free},
     * not after the GC.
     */
    static void freeBlock(long address, boolean explicit) {
        freed(address, Native.free0(address), explicit);
    }

    /** After {@code Native.free0(address)} answered {@code status}. */
    static void freed(long address, int status, boolean explicit) {
        if (status != Native.OK) {
            FAILED_RELEASES.increment();
            Log.log(System.Logger.Level.ERROR, "freeing the block of a direct buffer at 0x"
                    + Long.toHexString(address) + " failed: " + Native.message(status));
        }
        VirtualWait.wake(explicit);
    }
}
