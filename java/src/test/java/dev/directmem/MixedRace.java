package dev.directmem;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Child-JVM helper, the load that broke the old Java slab allocator (issue 12): 4 threads allocate
 * buffers of 16 B to 200 KB, free half of them and drop the other half, while another thread calls
 * System.gc(). Each buffer is checked zeroed and stamped; after the run every buffer must be released
 * exactly once (explicit frees + GC releases = allocations) and the counters must be 0.
 * Prints "clean" or what went wrong. Usage: MixedRace seconds
 */
public class MixedRace {
    public static void main(String[] args) throws Exception {
        long end = System.nanoTime() + (long) (Double.parseDouble(args[0]) * 1e9);
        AtomicLong allocations = new AtomicLong(), frees = new AtomicLong();
        List<Throwable> errors = java.util.Collections.synchronizedList(new ArrayList<>());
        long gcBefore = DirectMemory.stats().reclaimedByGc();
        List<Thread> threads = new ArrayList<>();
        for (int t = 0; t < 4; t++) {
            int id = t;
            threads.add(new Thread(() -> {
                SplittableRandom random = new SplittableRandom(id);
                try {
                    while (System.nanoTime() < end) {
                        int size = 16 + random.nextInt(200_000 - 16);
                        ByteBuffer b = DirectMemory.allocate(size);
                        allocations.incrementAndGet();
                        if (b.get(0) != 0 || b.get(size - 1) != 0) throw new AssertionError("not zeroed: " + size);
                        b.put(0, (byte) 1).put(size - 1, (byte) 1);
                        if (random.nextBoolean()) {
                            if (!DirectMemory.free(b)) throw new AssertionError("free of a live buffer returned false");
                            frees.incrementAndGet();
                        }
                    }
                } catch (Throwable e) {
                    errors.add(e);
                }
            }));
        }
        Thread gc = new Thread(() -> {
            while (System.nanoTime() < end) {
                System.gc();
                try {
                    Thread.sleep(5);
                } catch (InterruptedException e) {
                    return;
                }
            }
        });
        threads.forEach(Thread::start);
        gc.start();
        for (Thread t : threads) t.join();
        gc.join();
        for (int i = 0; i < 400 && DirectMemory.stats().count() != 0; i++) {
            System.gc();
            Thread.sleep(25);
        }
        DirectMemoryStats s = DirectMemory.stats();
        long released = frees.get() + s.reclaimedByGc() - gcBefore;
        if (!errors.isEmpty()) {
            errors.get(0).printStackTrace();
            System.out.println(errors.size() + " errors");
        } else if (released != allocations.get() || s.count() != 0 || s.reserved() != 0 || s.capacity() != 0
                || Block.FAILED_RELEASES.sum() != 0) {
            System.out.println("counts disagree: " + allocations.get() + " allocations, " + released + " released, " + s);
        } else {
            System.out.println("clean: " + allocations.get() + " allocations, " + frees.get() + " freed, "
                    + (s.reclaimedByGc() - gcBefore) + " reclaimed by the GC");
        }
    }
}
