package dev.directmem;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.ByteBuffer;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/** A reclaim round lets the cleaner thread finish what the last GC found before it asks for another GC. */
class CleanerWaitTest extends SettledTest {
    @Test
    void awaitIdleReturnsOnlyOnceTheCleanerThreadIsDone() throws Exception {
        ByteBuffer dropped = DirectMemory.allocate(64);
        Object monitor = LiveBlocks.monitorOf(Buffers.address(dropped));
        dropped = null;
        AtomicLong returnedAt = new AtomicLong();
        AtomicBoolean sawBusy = new AtomicBoolean();
        long releasedAt;
        Thread waiter;
        synchronized (monitor) { // the cleaner thread's release of the dropped buffer must wait for this
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (CleanerThread.state() != Thread.State.BLOCKED && System.nanoTime() < deadline) {
                System.gc();
                Thread.sleep(20);
            }
            assertEquals(Thread.State.BLOCKED, CleanerThread.state(), "the GC found the dropped buffer");
            waiter = new Thread(() -> {
                sawBusy.set(CleanerThread.awaitIdle(TimeUnit.SECONDS.toNanos(10)));
                returnedAt.set(System.nanoTime());
            });
            waiter.start();
            Thread.sleep(300);
            releasedAt = System.nanoTime();
        }
        waiter.join();
        assertTrue(sawBusy.get(), "awaitIdle saw the cleaner thread busy");
        assertTrue(returnedAt.get() - releasedAt >= 0, "awaitIdle returned while the cleaner thread was still blocked");
        assertTrue(Support.gcUntil(() -> DirectMemory.stats().count() == 0));
    }
}
