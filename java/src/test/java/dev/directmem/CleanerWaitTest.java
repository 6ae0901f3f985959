package dev.directmem;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** A reclaim round lets the cleaner thread finish what the last GC found before it asks for another GC. */
class CleanerWaitTest extends SettledTest {
    @Test
    void awaitIdleReturnsOnlyOnceTheCleanerThreadIsDone() throws Exception {
        // A backlog: many dropped buffers found by one GC, then a wait that must outlast their release.
        List<ByteBuffer> buffers = new ArrayList<>();
        for (int i = 0; i < 200_000; i++) buffers.add(DirectMemory.allocate(64));
        buffers = null;
        System.gc();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        boolean sawBusy = false;
        while (!sawBusy && System.nanoTime() < deadline) sawBusy = CleanerThread.awaitIdle(TimeUnit.SECONDS.toNanos(10));
        assertTrue(sawBusy, "the cleaner thread was seen busy with the backlog");
        assertEquals(0, DirectMemory.stats().count(), "awaitIdle returned before the cleaner thread finished");
    }
}
