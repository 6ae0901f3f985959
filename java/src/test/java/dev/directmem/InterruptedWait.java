package dev.directmem;

import com.sun.management.OperatingSystemMXBean;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;

/**
 * Child-JVM main (JDK 21+, with {@code -Ddirectmem.reclaimTimeoutMs} above a second): a virtual
 * thread with its interrupt status set waits a second for memory the main thread holds. Prints the
 * process's CPU time over that second and whether the virtual thread still had its interrupt status
 * when the allocation returned.
 */
public final class InterruptedWait {
    public static void main(String[] args) throws Exception {
        DirectMemory.setLimit(1 << 20);
        ByteBuffer held = DirectMemory.allocate(1 << 20);
        OperatingSystemMXBean os = (OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        ExecutorService executor = Support.virtualThreadExecutor();
        Future<Boolean> kept = executor.submit(() -> {
            Thread.currentThread().interrupt();
            DirectMemory.free(DirectMemory.allocate(1 << 20));
            return Thread.currentThread().isInterrupted();
        });
        while (!VirtualWait.othersWait()) Thread.sleep(1);
        long cpu0 = os.getProcessCpuTime(), t0 = System.nanoTime();
        Thread.sleep(1000);
        long cpu = os.getProcessCpuTime() - cpu0, wall = System.nanoTime() - t0;
        DirectMemory.free(held);
        System.out.println("interrupt kept: " + kept.get());
        System.out.println("process CPU " + cpu / 1_000_000 + " ms in " + wall / 1_000_000 + " ms of waiting");
        executor.shutdown();
    }
}
