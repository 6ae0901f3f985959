package dev.directmem;

import java.lang.management.GarbageCollectorMXBean;
import java.lang.management.ManagementFactory;
import javax.management.ObjectName;

/**
 * What the library's reclaim hook does in a JVM: ask for a garbage collection, so that unreachable
 * buffers are found and the {@link CleanerThread} frees them (which wakes the waiting allocations),
 * unless that thread, still busy with what an earlier GC found, frees enough. Under
 * {@code -XX:+DisableExplicitGC}, where {@code System.gc()} does nothing and the JDK's own
 * {@code allocateDirect} can never recover, JVMTI's {@code ForceGarbageCollection} still runs one
 * (the flag governs {@code System.gc()} alone); if JVMTI is not there, the DiagnosticCommand MBean's
 * {@code gcRun} does. Shenandoah ignores both under the flag (to it they are explicit requests too):
 * where no collection followed, short-lived heap garbage makes the collector start one, as any
 * program's allocations would. {@code -Ddirectmem.gcFallback=false} turns all of them off.
 */
final class Reclaimer {
    static final boolean EXPLICIT_GC_DISABLED = vmFlag("DisableExplicitGC");
    static final boolean GC_FALLBACK = !"false".equalsIgnoreCase(System.getProperty("directmem.gcFallback"));
    /** Epsilon frees nothing: garbage made for it would only fill its heap (and end the JVM). */
    private static final boolean NO_COLLECTOR = vmFlag("UseEpsilonGC");
    private static volatile boolean fallbackLogged, gcRunLogged, garbageLogged;
    /** The last chunk of garbage made: a volatile store, so the JIT cannot leave the allocation out. */
    @SuppressWarnings("unused")
    private static volatile byte[] garbage;
    /**
     * Small chunks, the count looked at after each. With 1 MiB ones (humongous objects in
     * Shenandoah's 256 KiB regions at -Xmx256m), 4 threads dropping 1 MiB buffers on JDK 17 made
     * 1,668-1,796 allocations in 3 s and 0-4 errors; with 16 KiB ones 2,436-3,076 and none (JDK 25:
     * 4,996-5,252 against 3,332-3,588, none either way; 3 alternating runs).
     */
    private static final int GARBAGE_CHUNK = 16 << 10;
    /** How long a round waits for the Cleaner at most: a few full GC pauses' worth. */
    private static final long MAX_CLEANER_WAIT_NANOS = 10_000_000;

    private Reclaimer() {}

    /** Called by the library (on any thread, JVM or native) with the shortfall in bytes. */
    static void reclaim(long bytesWanted) {
        long before = Native.available0();
        Orphans.freeAll(); // blocks a stack overflow left untracked (rare): they count as reclaimed
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
        long before = collections();
        int error = Native.forceGc0();
        if (error != 0) {
            gcRun(error);
        }
        if (collections() == before) {
            collectByAllocating(before);
        }
    }

    /**
     * Heap garbage, 16 KiB at a time, until a collection has ended, twice the heap was allocated, or
     * the heap is 98% full (a collector that would not start even then is not one this can help).
     * For collectors that ignore every request under {@code -XX:+DisableExplicitGC} (Shenandoah: the
     * 20 MiB drop loop under 100 MiB failed on its 6th allocation, as the JDK's does). It costs what
     * the collector lets a program allocate before it starts a cycle (about 90% of a free heap).
     */
    private static void collectByAllocating(long before) {
        if (before < 0 || NO_COLLECTOR) {
            return; // no collection would be seen, or none would free anything
        }
        if (!garbageLogged) {
            garbageLogged = true;
            Log.log(System.Logger.Level.INFO, "the garbage collector ignored JVMTI's ForceGarbageCollection "
                    + "under -XX:+DisableExplicitGC: directmem makes it run by allocating short-lived heap "
                    + "garbage (-Ddirectmem.gcFallback=false turns this off)");
        }
        Runtime heap = Runtime.getRuntime();
        long budget = 2 * heap.maxMemory(), ceiling = heap.maxMemory() / 50 * 49;
        try {
            for (long made = 0; made < budget && collections() == before
                    && heap.totalMemory() - heap.freeMemory() < ceiling; made += GARBAGE_CHUNK) {
                garbage = new byte[GARBAGE_CHUNK];
            }
        } catch (OutOfMemoryError heapFull) {
            // the heap is full of live objects: a collection has run by now
        } finally {
            garbage = null;
        }
    }

    /** Collections so far by every collector of this JVM; -1 when none counts them. */
    private static long collections() {
        long count = -1;
        for (GarbageCollectorMXBean gc : ManagementFactory.getGarbageCollectorMXBeans()) {
            if (gc.getCollectionCount() >= 0) {
                count = Math.max(count, 0) + gc.getCollectionCount();
            }
        }
        return count;
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
