import dev.directmem.DirectMemory;
import java.lang.reflect.Field;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

/**
 * One benchmark case in one JVM fork, for one implementation ("jdk": ByteBuffer.allocateDirect +
 * Unsafe.invokeCleaner; "dm": DirectMemory.allocate + free). Prints one line per timed round:
 * "RESULT <case> <impl> <value> <unit>". scripts/bench-java.sh runs the forks and the statistics.
 * Usage: Bench <impl> <case> [arg]
 */
public class Bench {
    static final sun.misc.Unsafe UNSAFE = unsafe();
    static boolean jdk;

    public static void main(String[] args) throws Exception {
        jdk = args[0].equals("jdk");
        String name = args[1];
        switch (name) {
            case "alloc-free": allocFree(Integer.parseInt(args[2])); break;
            case "touch-64m": touch(); break;
            case "drop-loop": dropLoop(); break;
            case "keep-loop": keepLoop(); break;
            case "threads-8": threads(false); break;
            case "vthreads-8": threads(true); break;
            case "vthreads-64": virtualSlots(); break;
            default: throw new IllegalArgumentException(name);
        }
    }

    static ByteBuffer allocate(int size) {
        return jdk ? ByteBuffer.allocateDirect(size) : DirectMemory.allocate(size);
    }

    static void free(ByteBuffer b) {
        if (jdk) UNSAFE.invokeCleaner(b); else DirectMemory.free(b);
    }

    static void result(String name, double value, String unit) {
        System.out.printf("RESULT %s %s %.6g %s%n", name, jdk ? "jdk" : "dm", value, unit);
    }

    /** ns per allocate+free pair: 1 s of warm-up, then 5 timed rounds of about 0.4 s. */
    static void allocFree(int size) {
        long sink = 0;
        long batch = Math.max(1, 200_000_000L / Math.max(size, 2048));
        for (int round = -3; round < 5; round++) {
            long t0 = System.nanoTime(), n = 0;
            while (System.nanoTime() - t0 < 400_000_000L) {
                for (long i = 0; i < batch; i++) {
                    ByteBuffer b = allocate(size);
                    sink += b.capacity();
                    free(b);
                }
                n += batch;
            }
            if (round >= 0) result("alloc-free-" + size, (System.nanoTime() - t0) / (double) n, "ns");
        }
        if (sink == 42) System.out.println();
    }

    /** ms to allocate 64 MiB, write one byte per page, free. */
    static void touch() {
        for (int round = -2; round < 5; round++) {
            long t0 = System.nanoTime();
            ByteBuffer b = allocate(64 << 20);
            for (int i = 0; i < b.capacity(); i += 4096) b.put(i, (byte) 1);
            free(b);
            if (round >= 0) result("touch-64m", (System.nanoTime() - t0) / 1e6, "ms");
        }
    }

    /** Allocations per second of 20 MiB buffers dropped under a 100 MiB limit, 5 rounds of 1 s. */
    static void dropLoop() {
        if (!jdk) DirectMemory.setLimit(100L << 20);
        for (int round = -1; round < 5; round++) {
            long t0 = System.nanoTime(), n = 0;
            try {
                while (System.nanoTime() - t0 < 1_000_000_000L) {
                    allocate(20 << 20).put(0, (byte) 1);
                    n++;
                }
            } catch (OutOfMemoryError e) {
                System.out.println("OOM after " + n + " allocations: " + e.getMessage());
                if (round >= 0) result("drop-loop", 0, "allocs/s");
                return;
            }
            if (round >= 0) result("drop-loop", n / ((System.nanoTime() - t0) / 1e9), "allocs/s");
        }
    }

    /** ms from the start of the failing call to the OutOfMemoryError, keeping 20 MiB buffers under 100 MiB. */
    static void keepLoop() {
        if (!jdk) DirectMemory.setLimit(100L << 20);
        List<ByteBuffer> kept = new ArrayList<>();
        long t0 = 0;
        try {
            while (true) {
                t0 = System.nanoTime();
                kept.add(allocate(20 << 20));
            }
        } catch (OutOfMemoryError e) {
            result("keep-loop", (System.nanoTime() - t0) / 1e6, "ms");
        }
    }

    /** 8 threads (virtual ones if asked) dropping 8 MiB buffers under a 32 MiB limit for 5 s: allocations/s and OOMs. */
    static void threads(boolean virtual) throws Exception {
        if (!jdk) DirectMemory.setLimit(32L << 20);
        AtomicLong allocations = new AtomicLong(), ooms = new AtomicLong();
        long end = System.nanoTime() + 5_000_000_000L;
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            Thread t = thread(virtual, () -> {
                while (System.nanoTime() < end) {
                    try {
                        allocate(8 << 20).put(0, (byte) 1);
                        allocations.incrementAndGet();
                    } catch (OutOfMemoryError e) {
                        ooms.incrementAndGet();
                    }
                }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) t.join();
        String name = virtual ? "vthreads-8" : "threads-8";
        result(name + "-rate", allocations.get() / 5.0, "allocs/s");
        result(name + "-ooms", ooms.get(), "OOMs");
    }

    /**
     * Issue 14's load: 64 virtual threads, 11 rounds each of a 256 KiB buffer held across a 2 ms sleep
     * and freed, under a 1 MiB limit (the script sets -XX:MaxDirectMemorySize=1m for the JDK):
     * seconds for the whole load, and the OutOfMemoryErrors.
     */
    static void virtualSlots() throws Exception {
        if (!jdk) DirectMemory.setLimit(1L << 20);
        AtomicLong ooms = new AtomicLong();
        long t0 = System.nanoTime();
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < 64; i++) {
            Thread t = thread(true, () -> {
                for (int r = 0; r < 11; r++) {
                    try {
                        ByteBuffer b = allocate(256 << 10);
                        b.put(0, (byte) 1);
                        Thread.sleep(2);
                        free(b);
                    } catch (OutOfMemoryError e) {
                        ooms.incrementAndGet();
                    } catch (InterruptedException e) {
                        return;
                    }
                }
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) t.join();
        result("vthreads-64-seconds", (System.nanoTime() - t0) / 1e9, "s");
        result("vthreads-64-ooms", ooms.get(), "OOMs");
    }

    /** A new, unstarted thread; a virtual one through Thread.ofVirtual() (JDK 21+, found by reflection). */
    static Thread thread(boolean virtual, Runnable body) throws Exception {
        if (!virtual) return new Thread(body);
        Object builder = Thread.class.getMethod("ofVirtual").invoke(null);
        return (Thread) Class.forName("java.lang.Thread$Builder").getMethod("unstarted", Runnable.class).invoke(builder, body);
    }

    static sun.misc.Unsafe unsafe() {
        try {
            Field f = sun.misc.Unsafe.class.getDeclaredField("theUnsafe");
            f.setAccessible(true);
            return (sun.misc.Unsafe) f.get(null);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(e);
        }
    }
}
