package dev.directmem;

import java.lang.management.ManagementFactory;
import javax.management.ObjectName;

/**
 * What the library's reclaim hook does in a JVM: ask for a garbage collection, so that unreachable
 * buffers are found and the {@link CleanerThread} frees them (which wakes the waiting allocations),
 * unless that thread, still busy with what an earlier GC found, frees enough. Under
 * {@code -XX:+DisableExplicitGC}, where {@code System.gc()} does nothing and the JDK's own
 * {@code allocateDirect} can never recover, JVMTI's {@code ForceGarbageCollection} still runs one
 * (the flag governs {@code System.gc()} alone); if JVMTI is not there, the DiagnosticCommand MBean's
 * {@code gcRun} does. {@code -Ddirectmem.gcFallback=false} turns both off.
 */
final class Reclaimer {
    static final boolean EXPLICIT_GC_DISABLED = vmFlag("DisableExplicitGC");
    static final boolean GC_FALLBACK = !"false".equalsIgnoreCase(System.getProperty("directmem.gcFallback"));
    private static volatile boolean fallbackLogged, gcRunLogged;
    /** How long a round waits for the Cleaner at most: a few full GC pauses' worth. */
    private static final long MAX_CLEANER_WAIT_NANOS = 10_000_000;

    private Reclaimer() {}

    /** Called by the library (on any thread, JVM or native) with the shortfall in bytes. */
    static void reclaim(long bytesWanted) {
        long before = Native.available0();
        // Like the JDK's Bits.reserveMemory, which waits for reference processing before it asks for
        // a GC: buffers the last GC found may still be on their way back through the cleaner thread. A
        // GC now would find none of them again and cost a full pause (in a drop loop, 4 rounds in 10
        // started so). If what came back covers the shortfall, the caller retries without a GC.
        CleanerThread.awaitIdle(MAX_CLEANER_WAIT_NANOS);
        if (Native.available0() - before >= bytesWanted) {
            return;
        }
        if (!EXPLICIT_GC_DISABLED) {
            System.gc();
        } else if (GC_FALLBACK) {
            forceGc();
        }
    }

    /**
     * A GC despite {@code -XX:+DisableExplicitGC}. JVMTI first: it is there at once, where the
     * MBean server that {@code gcRun} needs takes longer to create than a reclaim round lasts.
     */
    private static void forceGc() {
        if (!fallbackLogged) {
            fallbackLogged = true;
            Log.log(System.Logger.Level.INFO,
                    "-XX:+DisableExplicitGC is set: directmem reclaims direct memory through JVMTI's "
                            + "ForceGarbageCollection (-Ddirectmem.gcFallback=false turns this off)");
        }
        int error = Native.forceGc0();
        if (error != 0) {
            gcRun(error);
        }
    }

    private static void gcRun(int jvmtiError) {
        try {
            if (!gcRunLogged) {
                gcRunLogged = true;
                Log.log(System.Logger.Level.INFO, "JVMTI's ForceGarbageCollection "
                        + "failed (" + jvmtiError + "): directmem asks the DiagnosticCommand MBean's gcRun instead");
            }
            ManagementFactory.getPlatformMBeanServer().invoke(
                    new ObjectName("com.sun.management:type=DiagnosticCommand"), "gcRun", null, null);
            DirectMemoryPool.registerIfWanted(); // the platform MBean server exists now
        } catch (Exception e) {
            Log.log(System.Logger.Level.WARNING, "gcRun failed", e);
        }
    }

    private static boolean vmFlag(String name) {
        var option = DirectMemory.vmOption(name);
        return option != null && "true".equals(option.getValue());
    }
}
