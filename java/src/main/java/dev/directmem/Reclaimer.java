package dev.directmem;

import com.sun.management.HotSpotDiagnosticMXBean;
import java.lang.management.ManagementFactory;
import javax.management.ObjectName;

/**
 * What the library's reclaim hook does in a JVM: ask for a garbage collection, so that unreachable
 * buffers are found and their Cleaners free them (which wakes the waiting allocations), unless the
 * Cleaner, still busy with what an earlier GC found, or the release of unused slabs frees enough.
 * Under {@code -XX:+DisableExplicitGC}, where {@code System.gc()} does nothing and the JDK's own
 * {@code allocateDirect} can never recover, the DiagnosticCommand MBean's {@code gcRun} still runs a GC
 * ({@code -Ddirectmem.gcFallback=false} turns that off).
 */
final class Reclaimer {
    static final boolean EXPLICIT_GC_DISABLED = vmFlag("DisableExplicitGC");
    static final boolean GC_FALLBACK = !"false".equalsIgnoreCase(System.getProperty("directmem.gcFallback"));
    private static volatile boolean fallbackLogged;
    /** How long a round waits for the Cleaner at most: a few full GC pauses' worth. */
    private static final long MAX_CLEANER_WAIT_NANOS = 10_000_000;

    private Reclaimer() {}

    /** Called by the library (on any thread, JVM or native) with the shortfall in bytes. */
    static void reclaim(long bytesWanted) {
        long before = available();
        Slabs.trim(); // slabs kept for reuse but holding no buffer go back first
        // Like the JDK's Bits.reserveMemory, which waits for reference processing before it asks for
        // a GC: buffers the last GC found may still be on their way back through the Cleaner. A GC now
        // would find none of them again and cost a full pause (in a drop loop, 4 rounds in 10 started
        // so). If what came back (with the slabs) covers the shortfall, the caller retries without a GC.
        Tracked.awaitCleaner(MAX_CLEANER_WAIT_NANOS);
        if (available() - before >= bytesWanted) {
            return;
        }
        if (!EXPLICIT_GC_DISABLED) {
            System.gc();
        } else if (GC_FALLBACK) {
            gcRun();
        }
    }

    /** Bytes that fit under the limit now. */
    private static long available() {
        long[] s = Native.stats0();
        return s[0] - s[1]; // limit - reserved, in header order
    }

    private static void gcRun() {
        try {
            if (!fallbackLogged) {
                fallbackLogged = true;
                System.getLogger("dev.directmem").log(System.Logger.Level.INFO,
                        "-XX:+DisableExplicitGC is set: directmem reclaims direct memory through the "
                                + "DiagnosticCommand MBean's gcRun (-Ddirectmem.gcFallback=false turns this off)");
            }
            ManagementFactory.getPlatformMBeanServer().invoke(
                    new ObjectName("com.sun.management:type=DiagnosticCommand"), "gcRun", null, null);
            DirectMemoryPool.registerIfWanted(); // the platform MBean server exists now
        } catch (Exception e) {
            System.getLogger("dev.directmem").log(System.Logger.Level.WARNING, "gcRun failed", e);
        }
    }

    static String vmOption(String name) {
        try {
            return ManagementFactory.getPlatformMXBean(HotSpotDiagnosticMXBean.class).getVMOption(name).getValue();
        } catch (RuntimeException | LinkageError e) {
            return null; // not HotSpot, or jdk.management absent
        }
    }

    private static boolean vmFlag(String name) {
        return "true".equals(vmOption(name));
    }
}
