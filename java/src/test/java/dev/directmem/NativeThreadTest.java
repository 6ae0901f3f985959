package dev.directmem;

import static org.junit.jupiter.api.Assertions.*;

import java.lang.management.ManagementFactory;
import org.junit.jupiter.api.Test;

/** Native threads that needed a reclaim round leave the JVM's thread list once the round is over. */
class NativeThreadTest extends SettledTest {
    private static final int MIB = 1 << 20;

    @Test
    void nativeThreadsAttachedForAReclaimRoundAreDetachedAfterIt() {
        DirectMemory.setLimit(8L * MIB);
        int before = ManagementFactory.getThreadMXBean().getThreadCount();
        long requests = DirectMemory.stats().reclaimRequests();
        for (int i = 0; i < 30; i++) {
            DirectMemory.allocate(8 * MIB).put(0, (byte) 1); // dropped: the native thread needs a GC
            // The native thread lives on for 20 s after its allocations, long after this test.
            assertEquals(Native.OK, Native.allocateOnNativeThread0(4L * MIB, 1, 20_000));
        }
        assertTrue(DirectMemory.stats().reclaimRequests() - requests >= 30, "each needed a round: " + DirectMemory.stats());
        int after = ManagementFactory.getThreadMXBean().getThreadCount();
        assertTrue(after - before < 5, "JVM threads " + before + " -> " + after + " after 30 native threads each needed a round");
    }
}
