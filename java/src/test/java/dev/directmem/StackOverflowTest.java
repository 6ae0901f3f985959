package dev.directmem;

import static org.junit.jupiter.api.Assertions.*;

import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * A {@code StackOverflowError} right after the library gave a block out, or right after
 * {@link DirectMemory#free} took it out of {@link LiveBlocks}, must not leave the block reserved for
 * good. The freeing call itself can fail the same way; then the block is an {@link Orphans orphan}, which
 * the cleaner thread and every reclaim round free.
 */
class StackOverflowTest extends SettledTest {
    @Test
    void blocksOfBuffersAllocatedOrFreedAtTheEdgeOfTheStackAllComeBack() throws Exception {
        Support.Outcome o = Support.java(List.of("-Xss512k"), "dev.directmem.AtTheEdgeOfTheStack", "5");
        assertEquals(0, o.exit(), o.output());
        assertTrue(o.output().contains("failed with StackOverflowError; count 0, reserved 0"), o.output());
        assertFalse(o.output().contains(" 0 failed with"), "no step reached the edge of the stack: " + o.output());
    }

    /** What the catch blocks of {@code allocateAligned} and {@code free} do when {@code free0} overflows. */
    private static void orphan(long address) {
        synchronized (Orphans.ADDRESSES) {
            Orphans.ADDRESSES[Orphans.count++] = address;
        }
    }

    @Test
    void orphansAreFreedByTheNextReclaimRound() throws Exception {
        long address = Native.allocate0(4096, 0, true);
        assertTrue(address > 0);
        orphan(address); // the cleaner thread's tick could take it too, but hardly within this microsecond
        Reclaimer.reclaim(1);
        assertEquals(0, DirectMemory.stats().count(), DirectMemory.stats().toString());
        assertEquals(0, Orphans.count);
    }

    @Test
    void orphansAreFreedByTheCleanerThreadsTick() throws Exception {
        long address = Native.allocate0(64, 0, true);
        assertTrue(address > 0);
        orphan(address);
        long deadline = System.nanoTime() + 5_000_000_000L; // the tick comes about once a second
        while (DirectMemory.stats().count() != 0 && System.nanoTime() < deadline) Thread.sleep(20);
        assertEquals(0, DirectMemory.stats().count(), DirectMemory.stats().toString());
    }
}
