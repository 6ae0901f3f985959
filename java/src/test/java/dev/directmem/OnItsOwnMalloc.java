package dev.directmem;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Child-JVM helper, run with tests/c/malloc_shim.c preloaded (the JVM's own malloc on directmem
 * too): three threads allocate buffers of 1 B to 200 KiB through the binding, keep a few and drop
 * the rest, and GC now and then, for {@code seconds}. The binding's calls come from JNI, which the
 * shim does not see: the library's own bookkeeping must not come back to it through malloc.
 * Prints the buffers and the blocks directmem served in all (the JVM's included).
 * Usage: OnItsOwnMalloc seconds
 */
public class OnItsOwnMalloc {
    public static void main(String[] args) throws Exception {
        long end = System.nanoTime() + (long) (Double.parseDouble(args[0]) * 1e9);
        AtomicLong buffers = new AtomicLong();
        List<Thread> all = new ArrayList<>();
        for (int t = 0; t < 3; t++) {
            Random random = new Random(t);
            all.add(new Thread(() -> {
                ByteBuffer[] kept = new ByteBuffer[64];
                while (System.nanoTime() < end) {
                    ByteBuffer b = DirectMemory.allocate(1 + random.nextInt(random.nextBoolean() ? 600 : 200_000));
                    b.put(b.capacity() - 1, (byte) 1);
                    kept[random.nextInt(kept.length)] = b;
                    if (buffers.incrementAndGet() % 2_000 == 0) System.gc();
                }
            }));
        }
        all.forEach(Thread::start);
        for (Thread t : all) t.join();
        System.out.println(buffers.get() + " buffers, " + DirectMemory.stats().totalAllocations() + " blocks in all");
    }
}
