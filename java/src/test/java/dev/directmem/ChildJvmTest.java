package dev.directmem;

import static org.junit.jupiter.api.Assertions.*;

import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/** Behaviour that depends on JVM flags and system properties, each in a fresh JVM. */
class ChildJvmTest {
    @Test
    void limitComesFromThePropertyThenTheVmFlagThenMaxHeap() throws Exception {
        assertEquals("67108864", Support.java(List.of("-Ddirectmem.maxDirectMemorySize=64m"), "dev.directmem.PrintLimit").output().trim());
        assertEquals("1099511627776", Support.java(List.of("-Ddirectmem.maxDirectMemorySize=1t"), "dev.directmem.PrintLimit").output().trim(),
                "the suffixes of -XX:MaxDirectMemorySize, t included");
        assertEquals("1099511627776", Support.java(List.of("-XX:MaxDirectMemorySize=1T"), "dev.directmem.PrintLimit").output().trim());
        assertEquals("33554432", Support.java(List.of("-XX:MaxDirectMemorySize=32m"), "dev.directmem.PrintLimit").output().trim());
        assertEquals("67108864", Support.java(List.of("-XX:MaxDirectMemorySize=32m", "-Ddirectmem.maxDirectMemorySize=64m"),
                "dev.directmem.PrintLimit").output().trim(), "the property wins");
        assertEquals("0", Support.java(List.of("-XX:MaxDirectMemorySize=0"), "dev.directmem.PrintLimit").output().trim(),
                "0 on the command line means no direct memory, as in the JDK");
        Support.Outcome heap = Support.java(List.of(), "dev.directmem.PrintLimit", "maxMemory");
        String[] both = heap.output().trim().split("\\s+");
        assertEquals(both[1], both[0], "default is Runtime.maxMemory(): " + heap.output());
    }

    @Test
    void theDemoRunsToTheEndAsTheReadmeRunsIt() throws Exception {
        Support.Outcome o = Support.java(List.of("-Ddirectmem.jmx=true"), "Demo"); // as scripts/demo.sh runs it
        assertEquals(0, o.exit(), o.output());
        assertTrue(o.output().matches("(?s).*directmem  count=\\d+ \\(java.nio:type=BufferPool,name=directmem\\).*"), o.output());
        assertTrue(o.output().contains(" 0 OutOfMemoryErrors"), o.output());
        assertTrue(o.output().contains("final stats: "), o.output());
    }

    @Test
    void theBufferPoolMBeanIsRegisteredWhereJmxIsInUseOrWhenAskedFor() throws Exception {
        assertEquals("true", Support.java(List.of(), "dev.directmem.PrintMBean", "jmx-first").output().trim(),
                "auto: the platform MBean server was up before the library loaded");
        assertEquals("false", Support.java(List.of(), "dev.directmem.PrintMBean").output().trim(),
                "auto: a JVM without JMX is not made to load it");
        assertEquals("true", Support.java(List.of("-Ddirectmem.jmx=true"), "dev.directmem.PrintMBean").output().trim());
        assertEquals("false", Support.java(List.of("-Ddirectmem.jmx=false"), "dev.directmem.PrintMBean", "jmx-first").output().trim());
    }

    @Test
    void theBufferPoolMBeanAppearsWithinSecondsOfJmxStartingAfterTheLibrary() throws Exception {
        Support.Outcome o = Support.java(List.of(), "dev.directmem.PrintMBean", "jmx-late");
        assertTrue(o.output().trim().startsWith("true"), "auto: registered once the platform MBean server appeared: " + o.output());
    }

    /**
     * A JVM whose own malloc is directmem (tests/c/malloc_shim.c preloaded) runs the binding: the
     * library's bookkeeping, taken while a heap's door is held, comes from glibc's own names
     * (src/own_heap.rs). Before, it came through malloc back to the shim, which does not see JNI
     * calls, into the same heap: every allocating thread waited on its own door (3 of 3 runs hung).
     * The JVM's own blocks count against the limit there, hence a limit far above what it uses.
     */
    @Test
    void aJvmWhoseMallocIsDirectmemRunsTheBinding() throws Exception {
        String shim = System.getProperty("directmem.test.shim");
        assertNotNull(shim, "java/run-tests.sh builds tests/c/malloc_shim.c and names it in directmem.test.shim");
        Support.Outcome o = Support.java(Map.of("LD_PRELOAD", shim), List.of("-Ddirectmem.maxDirectMemorySize=1t"),
                "dev.directmem.OnItsOwnMalloc", "3");
        assertEquals(0, o.exit(), o.output());
        Matcher m = Pattern.compile("(\\d+) buffers, (\\d+) blocks in all").matcher(o.output());
        assertTrue(m.find(), o.output());
        long buffers = Long.parseLong(m.group(1)), blocks = Long.parseLong(m.group(2));
        assertTrue(buffers > 1000, o.output());
        assertTrue(blocks > buffers, "the JVM's own mallocs were served by directmem too: " + o.output());
    }

    @Test
    void threadsFreeingAndDroppingMixedSizesWhileOthersGcReleaseEachBufferOnce() throws Exception {
        for (int run = 0; run < 2; run++) {
            Support.Outcome o = Support.java(List.of(), "dev.directmem.MixedRace", "2");
            assertEquals(0, o.exit(), o.output());
            assertTrue(o.output().contains("clean: "), o.output());
        }
    }

    @Test
    void threadsDroppingBuffersUnderDisableExplicitGcNeverFail() throws Exception {
        for (int run = 0; run < 2; run++) {
            Support.Outcome o = Support.java(List.of("-XX:+DisableExplicitGC"), "dev.directmem.DropThreads", "4", "1", "128", "3");
            assertEquals(0, o.exit(), o.output());
            assertTrue(o.output().contains(" 0 errors"), o.output());
        }
    }

    /**
     * Shenandoah ignores JVMTI's ForceGarbageCollection and gcRun under -XX:+DisableExplicitGC: the
     * 4 threads dropping 1 MiB buffers made 128 allocations and 32 errors, before the Reclaimer made
     * heap garbage until a collection ran. One thread dropping 20 MiB buffers at the default wait;
     * four at a 2 s wait (none failed at the default 400 ms in 9 runs on JDK 17 here, but with
     * garbage in 1 MiB arrays 0-4 of ~1,700 did: a noisy machine can make a round that slow).
     */
    @Test
    void droppedBuffersComeBackUnderShenandoahWithDisableExplicitGc() throws Exception {
        List<String> flags = List.of("-XX:+UseShenandoahGC", "-XX:+DisableExplicitGC");
        Support.Outcome one = Support.java(flags, "dev.directmem.DropThreads", "1", "20", "100", "3");
        Assumptions.assumeFalse(one.output().contains("UseShenandoahGC"), "this JVM has no Shenandoah: " + one.output());
        assertEquals(0, one.exit(), one.output());
        assertTrue(one.output().contains(" 0 errors"), one.output());
        assertTrue(one.output().contains("allocating short-lived heap garbage"), "the fallback said what it does: " + one.output());
        List<String> patient = List.of("-XX:+UseShenandoahGC", "-XX:+DisableExplicitGC", "-Ddirectmem.reclaimTimeoutMs=2000");
        Support.Outcome four = Support.java(patient, "dev.directmem.DropThreads", "4", "1", "128", "3");
        assertEquals(0, four.exit(), four.output());
        assertTrue(four.output().contains(" 0 errors"), four.output());
    }

    @Test
    void anUnparsableLimitPropertyIsReportedAndIgnored() throws Exception {
        Support.Outcome o = Support.java(List.of("-XX:MaxDirectMemorySize=32m", "-Ddirectmem.maxDirectMemorySize=lots"), "dev.directmem.PrintLimit");
        assertTrue(o.output().contains("ignoring directmem.maxDirectMemorySize=lots"), o.output());
        assertTrue(o.output().trim().endsWith("33554432"), o.output());
    }

    @Test
    void dropLoopSurvivesDisableExplicitGcThroughJvmtiForceGarbageCollection() throws Exception {
        Support.Outcome o = Support.java(List.of("-XX:+DisableExplicitGC"), "DropLoop", "3");
        assertEquals(0, o.exit(), o.output());
        assertTrue(o.output().contains("no OutOfMemoryError"), o.output());
    }

    @Test
    void withoutTheFallbackDisableExplicitGcFailsWithAHint() throws Exception {
        Support.Outcome o = Support.java(List.of("-XX:+DisableExplicitGC", "-Ddirectmem.gcFallback=false"), "DropLoop", "3");
        assertNotEquals(0, o.exit(), o.output());
        assertTrue(o.output().contains("OutOfMemoryError"), o.output());
        assertTrue(o.output().contains("-XX:+DisableExplicitGC"), o.output());
    }

    @Test
    void leakDetectionReportsWhereAnUnfreedBufferWasAllocated() throws Exception {
        Support.Outcome o = Support.java(List.of("-Ddirectmem.leakDetection=true"), "dev.directmem.Leak");
        assertEquals(0, o.exit(), o.output());
        assertTrue(o.output().contains("reclaimed by the GC without DirectMemory.free"), o.output());
        assertTrue(o.output().contains("dev.directmem.Leak.leakOne"), "the allocation site is in the trace: " + o.output());
        assertTrue(o.output().contains("reclaimedByGc=1"), o.output());
    }

    @Test
    void aLibraryThatCannotBeLoadedSaysWhatWasTried() throws Exception {
        Support.Outcome o = Support.java(List.of("-Ddirectmem.library.path=/nonexistent/libdirectmem.so"), "dev.directmem.PrintLimit");
        assertNotEquals(0, o.exit());
        assertTrue(o.output().contains("UnsatisfiedLinkError"), o.output());
        assertTrue(o.output().contains("/nonexistent/libdirectmem.so"), o.output());
        Support.Outcome fromJar = Support.java(List.of("-Djava.library.path=/nowhere:/else"), "dev.directmem.PrintLimit");
        assertEquals(0, fromJar.exit(), "not on java.library.path: the jar's own copy is used: " + fromJar.output());
        Support.Outcome p = Support.java(List.of("-Djava.library.path=/nowhere:/else", "-Ddirectmem.extractDir=/proc/directmem"),
                "dev.directmem.PrintLimit");
        assertNotEquals(0, p.exit());
        assertTrue(p.output().contains("/nowhere/libdirectmem.so") && p.output().contains("/else/libdirectmem.so"), p.output());
        assertTrue(p.output().contains("the copy in the jar"), p.output());
    }

    @Test
    void aNativeThreadAttachedByTheReclaimHookDoesNotKeepTheJvmAlive() throws Exception {
        long started = System.nanoTime();
        Support.Outcome o = Support.java(List.of(), "dev.directmem.NativeThreadLingers");
        assertEquals(0, o.exit(), o.output());
        assertTrue(o.output().contains("native thread status 0"), o.output());
        assertTrue((System.nanoTime() - started) / 1e9 < 60, "the JVM exited while the native thread lingered");
    }
}
