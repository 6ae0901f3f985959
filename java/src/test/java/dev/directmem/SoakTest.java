package dev.directmem;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.ByteBuffer;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/**
 * 8 threads for {@code directmem.soakSeconds} (default 60) under a tight limit: small and big buffers,
 * some kept a while and freed explicitly, some dropped for the GC, some freed twice, with GCs in
 * between, while another thread trims every 2 ms (its visits reach the eight threads' heaps as they
 * work). Each buffer is stamped with its owner and checked before it goes, so two live buffers that
 * share memory, or pages given back under a live buffer, would be caught. Nothing may fail, and the
 * counters must come out exact.
 */
class SoakTest extends SettledTest {
    private static final int THREADS = 8;
    private static final long LIMIT = 64L << 20;
    private static final int[] SIZES = {0, 1, 16, 64, 100, 1000, 4096, 10_000, 65_536, 100_000, 1 << 20, 3 << 20};

    @Test
    void eightThreadsMixingFreesDropsAndGcUnderATightLimitEndExact() throws Exception {
        long seconds = Long.getLong("directmem.soakSeconds", 60);
        DirectMemory.setLimit(LIMIT);
        DirectMemoryStats before = DirectMemory.stats();
        AtomicLong allocations = new AtomicLong(), explicitFrees = new AtomicLong(), doubleFrees = new AtomicLong();
        List<Throwable> errors = Collections.synchronizedList(new ArrayList<>());
        long end = System.nanoTime() + seconds * 1_000_000_000L;
        List<Thread> threads = new ArrayList<>();
        for (int t = 0; t < THREADS; t++) {
            int id = t;
            threads.add(new Thread(() -> {
                SplittableRandom random = new SplittableRandom(id);
                ArrayDeque<ByteBuffer> kept = new ArrayDeque<>();
                long stamp = (long) id << 48;
                try {
                    while (System.nanoTime() < end) {
                        int size = SIZES[random.nextInt(SIZES.length)];
                        ByteBuffer b = random.nextInt(8) == 0
                                ? DirectMemory.allocateAligned(size, 1 << random.nextInt(13))
                                : DirectMemory.allocate(size);
                        allocations.incrementAndGet();
                        stamp++;
                        assertZeroedEnds(b);
                        stampEnds(b, stamp);
                        int what = random.nextInt(10);
                        if (what < 4 && size <= 100_000) { // keep a while (what all threads keep fits), free later
                            kept.add(b);
                            if (kept.size() > 6) free(kept.poll(), explicitFrees, doubleFrees, random);
                        } else if (what < 8) { // free now
                            free(b, explicitFrees, doubleFrees, random);
                        } // else: dropped, for the GC's Cleaner
                        if (random.nextInt(500) == 0) System.gc();
                    }
                    while (!kept.isEmpty()) free(kept.poll(), explicitFrees, doubleFrees, random);
                } catch (Throwable e) {
                    errors.add(e);
                }
            }, "soak-" + t));
        }
        AtomicLong trims = new AtomicLong();
        Thread trimmer = new Thread(() -> {
            try {
                while (System.nanoTime() < end) {
                    DirectMemory.trim();
                    trims.incrementAndGet();
                    Thread.sleep(2);
                }
            } catch (Throwable e) {
                errors.add(e);
            }
        }, "soak-trim");
        threads.forEach(Thread::start);
        trimmer.start();
        for (Thread t : threads) t.join();
        trimmer.join();
        assertEquals(List.of(), errors, "no error in " + allocations.get() + " allocations");

        assertTrue(Support.gcUntil(() -> DirectMemory.stats().count() == 0), DirectMemory.stats().toString());
        DirectMemoryStats after = DirectMemory.stats();
        long made = allocations.get();
        assertEquals(0, after.reserved(), after.toString());
        assertEquals(0, after.capacity());
        assertEquals(0, after.liveCleaners());
        assertEquals(made, after.totalAllocations() - before.totalAllocations(), "every allocation counted once");
        assertEquals(0, Block.FAILED_RELEASES.sum(), "no block released twice");
        assertEquals(made, explicitFrees.get() + after.reclaimedByGc() - before.reclaimedByGc(),
                "released by exactly one of free and the GC");
        // The peak is the process's: a test run before in this JVM under a higher limit (JUnit's class
        // order is not alphabetical, and changes as classes come and go) leaves it above ours.
        assertTrue(after.peakReserved() <= Math.max(LIMIT, before.peakReserved()), after.toString());
        assertEquals(before.limitFailures(), after.limitFailures(), "no allocation failed");
        assertTrue(trims.get() > 0);
        System.out.printf("soak: %d s, %d threads, %d allocations, %d explicit frees, %d double frees refused, "
                + "%d reclaimed by the GC, %d reclaim requests, %d trims%n", seconds, THREADS, made, explicitFrees.get(),
                doubleFrees.get(), after.reclaimedByGc() - before.reclaimedByGc(), after.reclaimRequests() - before.reclaimRequests(),
                trims.get());
    }

    private static void free(ByteBuffer b, AtomicLong frees, AtomicLong doubleFrees, SplittableRandom random) {
        long stamp = b.capacity() >= 16 ? b.getLong(0) : 0;
        if (b.capacity() >= 16) assertEquals(stamp, b.getLong(b.capacity() - 8), "no other buffer wrote here");
        assertTrue(DirectMemory.free(b));
        frees.incrementAndGet();
        if (random.nextInt(20) == 0) {
            assertFalse(DirectMemory.free(b), "a second free is refused");
            doubleFrees.incrementAndGet();
        }
    }

    private static void assertZeroedEnds(ByteBuffer b) {
        if (b.capacity() >= 16) {
            assertEquals(0, b.getLong(0), "handed out zeroed");
            assertEquals(0, b.getLong(b.capacity() - 8), "handed out zeroed");
        }
    }

    private static void stampEnds(ByteBuffer b, long stamp) {
        if (b.capacity() >= 16) {
            b.putLong(0, stamp);
            b.putLong(b.capacity() - 8, stamp);
        }
    }
}
