package dev.directmem;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/** The experiments of docs/mechanism.md section 4, with directmem: where the JDK fails, this must not. */
class ReclaimTest extends SettledTest {
    private static final int MIB = 1 << 20;

    @Test
    void dropLoopOf20MiBBuffersUnderA100MiBLimitNeverFails() {
        DirectMemory.setLimit(100L * MIB);
        long requestsBefore = DirectMemory.stats().reclaimRequests();
        long gcsBefore = Support.gcCount();
        int allocations = 300;
        for (int i = 0; i < allocations; i++) {
            DirectMemory.allocate(20 * MIB).put(0, (byte) i);
            long reserved = DirectMemory.stats().reserved(); // (the peak is process-wide: other tests set it)
            assertTrue(reserved <= 100L * MIB, "reserved " + reserved);
        }
        DirectMemoryStats s = DirectMemory.stats();
        assertTrue(s.reclaimRequests() > requestsBefore, "the limit was reached and the GC was asked: " + s);
        // One GC frees the five buffers under the limit. A round that asks for a GC while the Cleaner
        // is still freeing the last GC's finds none of them again: about 4 allocations per GC then.
        long gcs = Support.gcCount() - gcsBefore;
        assertTrue(allocations >= 4.5 * gcs, gcs + " GCs for " + allocations + " allocations");
    }

    @Test
    void keepLoopFailsOnTheSixthWithTheJdkStyleMessage() {
        DirectMemory.setLimit(100L * MIB);
        List<ByteBuffer> kept = new ArrayList<>();
        OutOfMemoryError error = null;
        try {
            for (int i = 0; i < 10; i++) kept.add(DirectMemory.allocate(20 * MIB));
        } catch (OutOfMemoryError e) {
            error = e;
        }
        assertNotNull(error);
        assertEquals(5, kept.size(), "the 6th allocation failed");
        String m = error.getMessage();
        assertTrue(m.contains("direct buffer memory"), m);
        assertTrue(m.contains("Cannot reserve 20971520 bytes"), m);
        assertTrue(m.contains("allocated: 104857600"), m);
        assertTrue(m.contains("limit: 104857600"), m);
        kept.forEach(b -> assertTrue(DirectMemory.free(b)));
        assertEquals(0, DirectMemory.stats().reserved());
    }

    @Test
    void eightThreadsDropping8MiBBuffersUnderA32MiBLimitNeverFail() throws Exception {
        DirectMemory.setLimit(32L * MIB);
        AtomicLong allocations = new AtomicLong();
        List<Throwable> errors = java.util.Collections.synchronizedList(new ArrayList<>());
        long end = System.nanoTime() + 5_000_000_000L;
        List<Thread> threads = new ArrayList<>();
        for (int t = 0; t < 8; t++) {
            Thread thread = new Thread(() -> {
                try {
                    while (System.nanoTime() < end) {
                        DirectMemory.allocate(8 * MIB).put(0, (byte) 1);
                        allocations.incrementAndGet();
                    }
                } catch (Throwable e) {
                    errors.add(e);
                }
            });
            threads.add(thread);
            thread.start();
        }
        for (Thread t : threads) t.join();
        assertEquals(List.of(), errors, "no OutOfMemoryError in " + allocations.get() + " allocations");
        assertTrue(allocations.get() > 8, "threads made progress: " + allocations.get());
    }

    @Test
    void aNativeThreadUnknownToTheJvmIsServedByTheGc() {
        DirectMemory.setLimit(16L * MIB);
        DirectMemory.allocate(16 * MIB).put(0, (byte) 1); // dropped: only a GC can free it
        assertEquals(Native.OK, Native.allocateOnNativeThread0(8L * MIB, 20, 0));
        assertTrue(DirectMemory.stats().reclaimedByGc() > 0);
    }

    @Test
    void explicitFreesRacingTheCleanerFromManyThreadsReleaseEachBufferOnce() throws Exception {
        DirectMemory.setLimit(1L << 40);
        long freedExplicitly = 0, total = 0, gcBefore = DirectMemory.stats().reclaimedByGc();
        List<Throwable> errors = java.util.Collections.synchronizedList(new ArrayList<>());
        for (int round = 0; round < 20; round++) {
            int n = 200;
            java.util.concurrent.atomic.AtomicReferenceArray<ByteBuffer> slots = new java.util.concurrent.atomic.AtomicReferenceArray<>(n);
            for (int i = 0; i < n; i++) slots.set(i, DirectMemory.allocate(1024));
            AtomicLong wins = new AtomicLong();
            List<Thread> threads = new ArrayList<>();
            for (int t = 0; t < 4; t++) { // free from the front, racing each other
                threads.add(new Thread(() -> {
                    try {
                        for (int i = 0; i < n; i++) {
                            ByteBuffer b = slots.get(i);
                            if (b != null && DirectMemory.free(b)) wins.incrementAndGet();
                        }
                    } catch (Throwable e) { // a racing free must return false, never throw
                        errors.add(e);
                    }
                }));
            }
            threads.add(new Thread(() -> { // drop from the back, and let the GC's Cleaner race them
                for (int i = n - 1; i >= 0; i--) {
                    slots.set(i, null);
                    if (i % 40 == 0) System.gc();
                }
            }));
            threads.forEach(Thread::start);
            for (Thread t : threads) t.join();
            freedExplicitly += wins.get();
            total += n;
        }
        assertEquals(List.of(), errors);
        assertTrue(Support.gcUntil(() -> DirectMemory.stats().count() == 0));
        DirectMemoryStats s = DirectMemory.stats();
        assertEquals(total, freedExplicitly + (s.reclaimedByGc() - gcBefore), "every buffer released exactly once");
        assertEquals(0, s.count());
        assertEquals(0, s.reserved());
        assertEquals(0, s.liveCleaners());
    }

    @Test
    void buffersAllocatedByThreadsThatExitAreReclaimed() throws Exception {
        for (int i = 0; i < 16; i++) {
            Thread t = new Thread(() -> {
                for (int j = 0; j < 50; j++) DirectMemory.allocate(4096).put(0, (byte) 1);
            });
            t.start();
            t.join();
        }
        assertTrue(Support.gcUntil(() -> DirectMemory.stats().count() == 0), DirectMemory.stats().toString());
        assertEquals(0, DirectMemory.stats().reserved());
    }
}
