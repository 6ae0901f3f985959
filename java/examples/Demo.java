import dev.directmem.DirectMemory;
import dev.directmem.DirectMemoryStats;
import java.lang.management.BufferPoolMXBean;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.AtomicLong;

/** The main job: what directmem does for a JVM program, side by side with the JDK, in about 20 seconds. */
public class Demo {
    public static void main(String[] args) throws Exception {
        System.out.println("== allocate, use, free");
        ByteBuffer b = DirectMemory.allocate(4096);
        b.putLong(0, 42);
        System.out.println("buffer: " + b + ", first long " + b.getLong(0) + ", stats " + DirectMemory.stats());
        System.out.println("free -> " + DirectMemory.free(b) + ", free again -> " + DirectMemory.free(b));

        System.out.println("== 64 MiB: allocation time (the JDK zeroes the whole block, directmem gets zero pages)");
        for (int i = 0; i < 3; i++) {
            long t0 = System.nanoTime();
            ByteBuffer j = ByteBuffer.allocateDirect(64 << 20);
            long t1 = System.nanoTime();
            ByteBuffer d = DirectMemory.allocate(64 << 20);
            long t2 = System.nanoTime();
            DirectMemory.free(d);
            System.out.printf("  JDK %.2f ms   directmem %.3f ms%n", (t1 - t0) / 1e6, (t2 - t1) / 1e6);
            j = null;
            System.gc();
        }

        System.out.println("== drop loop: 20 MiB buffers dropped under a 100 MiB limit, 3 s");
        DropLoop.main(new String[] {"3"});

        System.out.println("== keep loop: 20 MiB buffers kept under a 100 MiB limit");
        KeepLoop.main(new String[0]);

        System.out.println("== 8 threads dropping 8 MiB buffers under a 32 MiB limit, 3 s");
        DirectMemory.setLimit(32L << 20);
        AtomicLong allocations = new AtomicLong(), errors = new AtomicLong();
        long end = System.nanoTime() + 3_000_000_000L;
        Thread[] threads = new Thread[8];
        for (int i = 0; i < threads.length; i++) {
            threads[i] = new Thread(() -> {
                while (System.nanoTime() < end) {
                    try {
                        DirectMemory.allocate(8 << 20).put(0, (byte) 1);
                        allocations.incrementAndGet();
                    } catch (OutOfMemoryError e) {
                        errors.incrementAndGet();
                    }
                }
            });
            threads[i].start();
        }
        for (Thread t : threads) t.join();
        System.out.printf("  %d allocations, %d OutOfMemoryErrors%n", allocations.get(), errors.get());

        System.out.println("== buffer pools as JMX tools see them");
        for (BufferPoolMXBean pool : ManagementFactory.getPlatformMXBeans(BufferPoolMXBean.class)) {
            System.out.printf("  %-10s count=%d capacity=%d used=%d%n", pool.getName(), pool.getCount(), pool.getTotalCapacity(), pool.getMemoryUsed());
        }
        // Registered where JMX was in use when the library loaded, or with -Ddirectmem.jmx=true
        // (scripts/demo.sh sets it): loading JMX just for it would slow every full GC.
        javax.management.MBeanServer server = ManagementFactory.getPlatformMBeanServer();
        javax.management.ObjectName name = new javax.management.ObjectName("java.nio:type=BufferPool,name=directmem");
        if (server.isRegistered(name)) {
            System.out.println("  directmem  count=" + server.getAttribute(name, "Count") + " (" + name + ")");
        } else {
            System.out.println("  directmem  not registered: JMX was not in use when directmem loaded (-Ddirectmem.jmx=true registers it)");
        }
        DirectMemoryStats s = DirectMemory.stats();
        System.out.println("final stats: " + s);
    }
}
