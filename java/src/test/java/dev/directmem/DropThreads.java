package dev.directmem;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Child-JVM helper: {@code threads} threads allocate and drop buffers of {@code mib} MiB under a
 * {@code limit} MiB limit for {@code seconds}; prints the allocations and the errors.
 * Usage: DropThreads threads mib limitMib seconds
 */
public class DropThreads {
    public static void main(String[] args) throws Exception {
        int threads = Integer.parseInt(args[0]), mib = Integer.parseInt(args[1]);
        DirectMemory.setLimit(Long.parseLong(args[2]) << 20);
        long end = System.nanoTime() + (long) (Double.parseDouble(args[3]) * 1e9);
        AtomicLong allocations = new AtomicLong(), errors = new AtomicLong();
        List<Thread> all = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            all.add(new Thread(() -> {
                while (System.nanoTime() < end) {
                    try {
                        DirectMemory.allocate(mib << 20).put(0, (byte) 1);
                        allocations.incrementAndGet();
                    } catch (OutOfMemoryError e) {
                        if (errors.incrementAndGet() == 1) e.printStackTrace();
                    }
                }
            }));
        }
        all.forEach(Thread::start);
        for (Thread t : all) t.join();
        System.out.println(allocations.get() + " allocations, " + errors.get() + " errors");
    }
}
