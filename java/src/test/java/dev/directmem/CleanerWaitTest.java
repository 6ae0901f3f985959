package dev.directmem;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.ByteBuffer;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** A reclaim round lets the Cleaner finish what the last GC found before it asks for another GC. */
class CleanerWaitTest {
    /** A tracked object whose release takes a while, as a backlog of buffers would. */
    private static final class SlowRelease extends Tracked {
        final CountDownLatch started = new CountDownLatch(1);
        volatile boolean done;

        SlowRelease() {
            super(0);
        }

        @Override
        void release() {
            started.countDown();
            // Busy, as the Cleaner's own actions are (native calls and locks, never sleeping).
            long end = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(300);
            while (System.nanoTime() - end < 0) Thread.onSpinWait();
            done = true;
        }
    }

    @Test
    void awaitCleanerReturnsOnlyOnceTheCleanerIsDone() throws Exception {
        SlowRelease slow = new SlowRelease();
        slow.track(ByteBuffer.allocate(1)); // the referent is dropped at once: the GC finds it
        assertTrue(Support.gcUntil(() -> slow.started.getCount() == 0), "the Cleaner ran the release");
        assertTrue(Tracked.awaitCleaner(TimeUnit.SECONDS.toNanos(10)), "the Cleaner was busy");
        assertTrue(slow.done, "awaitCleaner returned before the Cleaner finished");
    }
}
