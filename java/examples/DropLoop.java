import dev.directmem.DirectMemory;
import dev.directmem.DirectMemoryStats;
import java.nio.ByteBuffer;

/**
 * The DirectBufferOOM drop loop (docs/mechanism.md section 4): 20 MiB buffers allocated and dropped under a
 * 100 MiB limit. The JDK survives it only while System.gc() works; run it with -XX:+DisableExplicitGC
 * to see directmem keep going where allocateDirect fails on the 6th allocation.
 * Usage: DropLoop [seconds=5] [jdk]
 */
public class DropLoop {
    public static void main(String[] args) {
        double seconds = args.length > 0 ? Double.parseDouble(args[0]) : 5;
        boolean jdk = args.length > 1 && args[1].equals("jdk");
        if (!jdk) DirectMemory.setLimit(100L << 20);
        long end = System.nanoTime() + (long) (seconds * 1e9), n = 0;
        while (System.nanoTime() < end) {
            ByteBuffer b = jdk ? ByteBuffer.allocateDirect(20 << 20) : DirectMemory.allocate(20 << 20);
            b.put(0, (byte) 1);
            if (++n % 50 == 0 && !jdk) print(n);
        }
        System.out.printf("drop loop (%s): %d allocations of 20 MiB in %.1f s, no OutOfMemoryError%n",
                jdk ? "JDK allocateDirect" : "directmem", n, seconds);
        if (!jdk) print(n);
    }

    static void print(long n) {
        DirectMemoryStats s = DirectMemory.stats();
        System.out.printf("  after %d: reserved=%d MiB live=%d reclaimRequests=%d reclaimedByGc=%d limitFailures=%d%n",
                n, s.reserved() >> 20, s.count(), s.reclaimRequests(), s.reclaimedByGc(), s.limitFailures());
    }
}
