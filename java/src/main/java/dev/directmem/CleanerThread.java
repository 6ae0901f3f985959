package dev.directmem;

import java.lang.ref.Reference;
import java.lang.ref.ReferenceQueue;
import java.nio.ByteBuffer;
import java.util.concurrent.locks.LockSupport;

/**
 * The thread that frees the blocks of buffers the GC found unreachable, like the JDK's Reference
 * Handler runs {@code DirectByteBuffer}'s cleaners. Its actions take a stripe monitor of
 * {@link LiveBlocks} and call the library, never a lock that an allocation holds while it waits.
 * While idle it also looks, about once a second, whether JMX has started since (see
 * {@link DirectMemoryPool#registerIfWanted}), and has the library give back the memory it kept
 * for reuse longer than it keeps it for (which it otherwise does only when it is used again).
 */
final class CleanerThread {
    static final ReferenceQueue<ByteBuffer> QUEUE = new ReferenceQueue<>();
    private static final long JMX_LOOK_NANOS = 1_000_000_000L;
    /** About one release of a big block: polling faster would only take the CPU from the thread. */
    private static final long POLL_NANOS = 20_000;
    private static final Thread THREAD = new Thread(CleanerThread::run, "directmem-cleaner");

    static {
        THREAD.setDaemon(true);
        THREAD.setPriority(Thread.MAX_PRIORITY); // like the JDK's Reference Handler: waiters depend on it
        THREAD.start();
    }

    private CleanerThread() {}

    /** Makes sure the thread runs (class initialisation starts it). */
    static void start() {}

    private static void run() {
        long lastLook = System.nanoTime();
        while (true) {
            try {
                Reference<? extends ByteBuffer> found = QUEUE.remove(JMX_LOOK_NANOS / 1_000_000);
                if (found != null) {
                    reclaim((Block) found);
                }
                if (System.nanoTime() - lastLook >= JMX_LOOK_NANOS) {
                    lastLook = System.nanoTime();
                    Orphans.freeAll();
                    DirectMemoryPool.registerIfWanted();
                    // Empty slabs keep their pages 100 ms for the next batch; the library gives
                    // them back on its own traffic, which a quiet program does not make.
                    Native.decay0();
                }
            } catch (Throwable t) { // never let the thread die: every later buffer would leak
                Log.log(System.Logger.Level.ERROR, "directmem-cleaner", t);
            }
        }
    }

    private static void reclaim(Block block) {
        if (block.release()) {
            // The report before the count: whoever sees the count (a test, a monitor) finds the report written.
            if (block.allocationSite != null) {
                Log.log(System.Logger.Level.WARNING, "a direct buffer of " + block.capacity
                        + " bytes was reclaimed by the GC without DirectMemory.free", block.allocationSite);
            }
            Block.RECLAIMED_BY_GC.increment();
        }
    }

    /**
     * Waits, at most {@code maxNanos}, while the thread is freeing blocks (or about to: blocked on a
     * monitor on its way); true if it was busy at all. It waits on its queue when it has nothing to
     * do, and its actions never wait or sleep, so its state tells whether buffers a GC already found
     * are still being freed.
     */
    static boolean awaitIdle(long maxNanos) {
        if (THREAD == Thread.currentThread() || isIdle()) {
            return false;
        }
        long deadline = System.nanoTime() + maxNanos;
        while (!isIdle() && System.nanoTime() - deadline < 0) {
            LockSupport.parkNanos(POLL_NANOS);
        }
        return true;
    }

    static Thread.State state() {
        return THREAD.getState();
    }

    private static boolean isIdle() {
        Thread.State state = THREAD.getState();
        return state == Thread.State.WAITING || state == Thread.State.TIMED_WAITING || state == Thread.State.TERMINATED;
    }
}
