package dev.directmem;

import static org.junit.jupiter.api.Assertions.*;

import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Set;
import javax.management.MBeanServer;
import javax.management.ObjectName;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The API's contract, in this JVM, against the real library. */
class DirectMemoryTest {
    @BeforeEach
    void settle() throws InterruptedException {
        Support.settle();
    }

    @Test
    void allocateGivesAZeroedBigEndianDirectBufferAtPositionZero() {
        for (int capacity : new int[] {0, 1, 64, 4096, 1 << 20, 3 << 20}) {
            ByteBuffer b = DirectMemory.allocate(capacity);
            assertTrue(b.isDirect());
            assertEquals(ByteOrder.BIG_ENDIAN, b.order());
            assertEquals(0, b.position());
            assertEquals(capacity, b.limit());
            assertEquals(capacity, b.capacity());
            for (int i = 0; i < capacity; i++) assertEquals(0, b.get(i), "byte " + i + " of " + capacity);
            DirectMemory.free(b);
        }
    }

    @Test
    void memoryKeptForReuseIsGivenBackWhenTheProgramGoesQuiet() throws InterruptedException {
        // 64 KiB buffers fill 1 MiB slabs: 160 of them empty 10 slabs when freed. Written whole, as
        // a program uses its buffers (slabs of buffers left mostly untouched give their pages back
        // at once). This thread keeps one slab back for itself and the one it allocates from (both
        // shown as cached, 2 MiB, with the smaller slabs it allocates from in the classes earlier
        // tests used); the library keeps the rest 100 ms, then gives their pages back, but only
        // when it is used again, or when the cleaner thread's once-a-second tick asks it to. The
        // tick also gives back what a thread keeps once it has sat still (no allocation, no free)
        // from one tick to the next: this one's too, while it sleeps here.
        ByteBuffer[] buffers = new ByteBuffer[160];
        byte[] data = new byte[64 << 10];
        Arrays.fill(data, (byte) 1);
        for (int i = 0; i < buffers.length; i++) buffers[i] = DirectMemory.allocate(64 << 10).put(data);
        for (ByteBuffer b : buffers) assertTrue(DirectMemory.free(b));
        long kept = DirectMemory.stats().cached();
        assertTrue(kept >= 8 << 20, "cached right after the frees: " + kept);
        long deadline = System.nanoTime() + 5_000_000_000L;
        long now;
        while ((now = DirectMemory.stats().cached()) > 0 && System.nanoTime() - deadline < 0) {
            Thread.sleep(50); // no allocation meanwhile: nothing but the tick can give them back
        }
        assertEquals(0, now, "still cached after 5 quiet seconds, of " + kept);
    }

    @Test
    void trimGivesBackWhatAnIdleThreadKeeps() throws InterruptedException {
        // 40 buffers of 64 KiB, written whole, fill three 1 MiB slabs; freed, one goes back to the
        // library and the thread keeps two: one back for itself and the one it allocates from.
        // Only that thread could give those back before: a trim from here left them (>= 1 MiB).
        java.util.concurrent.CountDownLatch idle = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CountDownLatch done = new java.util.concurrent.CountDownLatch(1);
        Thread thread = new Thread(() -> {
            byte[] data = new byte[64 << 10];
            Arrays.fill(data, (byte) 1);
            ByteBuffer[] buffers = new ByteBuffer[40];
            for (int i = 0; i < buffers.length; i++) buffers[i] = DirectMemory.allocate(64 << 10).put(data);
            for (ByteBuffer b : buffers) DirectMemory.free(b);
            idle.countDown();
            try {
                done.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
        thread.start();
        try {
            idle.await();
            long kept = DirectMemory.stats().cached();
            assertTrue(kept >= 1 << 20, "cached after the other thread's frees: " + kept);
            long trimmed = DirectMemory.trim();
            long left = DirectMemory.stats().cached();
            assertTrue(trimmed >= 1 << 20, "trimmed " + trimmed + " of " + kept);
            // Not 0: the cleaner thread may free a buffer the GC found meanwhile.
            assertTrue(left < 256 << 10, "still cached after the trim: " + left + " of " + kept);
        } finally {
            done.countDown();
            thread.join();
        }
    }

    @Test
    void allocatedBytesAreCountedAndFreedExactly() {
        DirectMemoryStats before = DirectMemory.stats();
        ByteBuffer a = DirectMemory.allocate(1000), b = DirectMemory.allocate(5000);
        DirectMemoryStats during = DirectMemory.stats();
        assertEquals(before.capacity() + 6000, during.capacity());
        assertEquals(before.count() + 2, during.count());
        assertEquals(before.reserved() + 6000, during.reserved(), "each buffer is charged its exact capacity");
        assertTrue(DirectMemory.free(a));
        assertTrue(DirectMemory.free(b));
        DirectMemoryStats after = DirectMemory.stats();
        assertEquals(0, after.reserved());
        assertEquals(0, after.capacity());
        assertEquals(0, after.count());
        assertEquals(before.totalAllocations() + 2, after.totalAllocations());
    }

    @Test
    void bigBuffersReserveExactlyTheirCapacity() {
        DirectMemoryStats before = DirectMemory.stats();
        ByteBuffer b = DirectMemory.allocate((1 << 20) + 3);
        assertEquals(before.reserved() + (1 << 20) + 3, DirectMemory.stats().reserved());
        assertTrue(DirectMemory.free(b));
        assertEquals(before.reserved(), DirectMemory.stats().reserved());
    }

    @Test
    void smallBuffersAreZeroedWhenTheirSlotIsReused() {
        ByteBuffer first = DirectMemory.allocate(1000);
        long address = DirectMemory.address(first);
        for (int i = 0; i < 1000; i++) first.put(i, (byte) 0x5a);
        assertTrue(DirectMemory.free(first));
        ByteBuffer second = DirectMemory.allocate(1000);
        assertEquals(address, DirectMemory.address(second), "the freed slot is handed out again");
        for (int i = 0; i < 1000; i++) assertEquals(0, second.get(i), "byte " + i);
        assertFalse(DirectMemory.free(first), "the first is already freed");
        assertEquals(1, DirectMemory.stats().count(), "and freeing it again left the second alone");
        assertTrue(DirectMemory.free(second));
    }

    @Test
    void aFreedBufferRefusesUseInsteadOfTouchingFreedMemory() {
        for (int capacity : new int[] {64, 1 << 20}) {
            ByteBuffer b = DirectMemory.allocate(capacity);
            assertTrue(DirectMemory.free(b));
            assertEquals(0, b.limit());
            assertThrows(IndexOutOfBoundsException.class, () -> b.get(0));
            assertThrows(IndexOutOfBoundsException.class, () -> b.putLong(0, 1L));
            assertThrows(java.nio.BufferOverflowException.class, () -> b.put((byte) 1));
        }
    }

    @Test
    void allocateAlignedHonoursTheAlignment() {
        for (int alignment : new int[] {0, 1, 8, 64, 4096, 1 << 16, 1 << 21}) {
            ByteBuffer b = DirectMemory.allocateAligned(100, alignment);
            if (alignment > 0) assertEquals(0, DirectMemory.address(b) % alignment, "alignment " + alignment);
            DirectMemory.free(b);
        }
    }

    @Test
    void integerMaxValueCapacityAndAlignmentUpTo1GiB() {
        DirectMemoryStats before = DirectMemory.stats();
        DirectMemory.setLimit(Integer.MAX_VALUE - 1L); // one byte short
        OutOfMemoryError refused = assertThrows(OutOfMemoryError.class, () -> DirectMemory.allocate(Integer.MAX_VALUE));
        assertTrue(refused.getMessage().contains("Cannot reserve 2147483647 bytes"), refused.getMessage());
        assertEquals(before.reserved(), DirectMemory.stats().reserved(), "a refusal changes nothing");
        DirectMemory.setLimit(1L << 40);
        ByteBuffer huge = DirectMemory.allocate(Integer.MAX_VALUE); // address space; only touched pages cost memory
        assertEquals(Integer.MAX_VALUE, huge.capacity());
        assertEquals(0, huge.get(Integer.MAX_VALUE - 1));
        huge.put(Integer.MAX_VALUE - 1, (byte) 7);
        assertEquals(before.reserved() + Integer.MAX_VALUE, DirectMemory.stats().reserved());
        assertTrue(DirectMemory.free(huge));
        for (int capacity : new int[] {1, Integer.MAX_VALUE}) {
            ByteBuffer aligned = DirectMemory.allocateAligned(capacity, 1 << 30);
            assertEquals(0, DirectMemory.address(aligned) % (1 << 30), "capacity " + capacity);
            assertEquals(0, aligned.get(capacity - 1));
            assertTrue(DirectMemory.free(aligned));
        }
        assertEquals(before.reserved(), DirectMemory.stats().reserved());
    }

    @Test
    void badArgumentsThrowAndChangeNothing() {
        DirectMemoryStats before = DirectMemory.stats();
        assertThrows(IllegalArgumentException.class, () -> DirectMemory.allocate(-1));
        assertThrows(IllegalArgumentException.class, () -> DirectMemory.allocate(Integer.MIN_VALUE));
        assertThrows(IllegalArgumentException.class, () -> DirectMemory.allocateAligned(10, 3));
        assertThrows(IllegalArgumentException.class, () -> DirectMemory.allocateAligned(10, -4));
        assertThrows(IllegalArgumentException.class, () -> DirectMemory.allocateAligned(10, Integer.MIN_VALUE));
        assertThrows(IllegalArgumentException.class, () -> DirectMemory.setLimit(-1));
        assertThrows(NullPointerException.class, () -> DirectMemory.free(null));
        assertThrows(IllegalArgumentException.class, () -> DirectMemory.free(ByteBuffer.allocate(10)));
        assertThrows(IllegalArgumentException.class, () -> DirectMemory.free(ByteBuffer.allocateDirect(10)));
        DirectMemoryStats after = DirectMemory.stats();
        assertEquals(before.reserved(), after.reserved());
        assertEquals(before.count(), after.count());
        assertEquals(before.totalAllocations(), after.totalAllocations());
    }

    @Test
    void slicesDuplicatesAndViewsCannotBeFreedButTheirRootCan() {
        ByteBuffer root = DirectMemory.allocate(64);
        for (Object view : new Object[] {root.slice(), root.duplicate(), root.asReadOnlyBuffer(), root.slice(8, 8)}) {
            assertThrows(IllegalArgumentException.class, () -> DirectMemory.free((ByteBuffer) view), view.toString());
        }
        assertEquals(1, DirectMemory.stats().count());
        assertTrue(DirectMemory.free(root));
    }

    @Test
    void freeTwiceReturnsFalseTheSecondTime() {
        ByteBuffer b = DirectMemory.allocate(128);
        assertTrue(DirectMemory.free(b));
        assertFalse(DirectMemory.free(b));
        assertFalse(DirectMemory.free(b));
        assertEquals(0, DirectMemory.stats().count());
    }

    @Test
    void equalContentsAreNotConfused() {
        ByteBuffer a = DirectMemory.allocate(16), b = DirectMemory.allocate(16);
        assertEquals(a, b); // ByteBuffer.equals compares contents
        assertTrue(DirectMemory.free(a));
        assertEquals(1, DirectMemory.stats().count(), "b is still live");
        assertTrue(DirectMemory.free(b));
    }

    @Test
    void explicitFreeThenAddressReuseThenGcOfTheFirstLeavesTheSecondIntact() throws Exception {
        int size = 256 << 10; // a mapping of its own: the kernel hands a freed range out again
        ByteBuffer first = DirectMemory.allocate(size);
        long address = DirectMemory.address(first);
        assertTrue(DirectMemory.free(first));
        ByteBuffer second = null;
        for (int i = 0; i < 1000 && second == null; i++) {
            ByteBuffer candidate = DirectMemory.allocate(size);
            if (DirectMemory.address(candidate) == address) second = candidate;
            else DirectMemory.free(candidate);
        }
        assertNotNull(second, "the freed address was handed out again");
        for (int i = 0; i < 256; i++) second.put(i, (byte) i);
        java.lang.ref.WeakReference<ByteBuffer> firstGone = new java.lang.ref.WeakReference<>(first);
        first = null; // now only the GC can reach the first buffer
        assertTrue(Support.gcUntil(() -> firstGone.get() == null), "first buffer collected");
        for (int i = 0; i < 256; i++) assertEquals((byte) i, second.get(i));
        assertEquals(1, DirectMemory.stats().count());
        assertTrue(DirectMemory.free(second), "the second buffer was still live");
    }

    @Test
    void droppedBuffersAreReclaimedByTheGcAndCounted() throws Exception {
        long before = DirectMemory.stats().reclaimedByGc();
        for (int i = 0; i < 10; i++) DirectMemory.allocate(1 << 16).put(0, (byte) 1);
        assertTrue(Support.gcUntil(() -> DirectMemory.stats().count() == 0));
        assertEquals(before + 10, DirectMemory.stats().reclaimedByGc());
        assertEquals(0, DirectMemory.stats().reserved());
    }

    @Test
    void limitCanBeReadAndSetAndMayGoBelowWhatIsReserved() {
        ByteBuffer b = DirectMemory.allocate(1 << 20);
        DirectMemory.setLimit(1000);
        assertEquals(1000, DirectMemory.limit());
        assertEquals(1 << 20, DirectMemory.stats().reserved(), "existing buffers stay");
        assertThrows(OutOfMemoryError.class, () -> DirectMemory.allocate(100));
        assertEquals(0, b.get(0));
        DirectMemory.free(b);
        DirectMemory.allocate(100);
    }

    @Test
    void bufferPoolMBeanIsListedBesideTheJdkPools() throws Exception {
        MBeanServer server = ManagementFactory.getPlatformMBeanServer();
        DirectMemoryPool.register(); // whether that happens by itself is tested in ChildJvmTest
        Set<ObjectName> pools = server.queryNames(new ObjectName("java.nio:type=BufferPool,*"), null);
        ObjectName ours = new ObjectName("java.nio:type=BufferPool,name=directmem");
        assertTrue(pools.contains(ours), pools.toString());
        assertTrue(pools.contains(new ObjectName("java.nio:type=BufferPool,name=direct")), pools.toString());
        ByteBuffer b = DirectMemory.allocate(12345);
        assertEquals("directmem", server.getAttribute(ours, "Name"));
        assertEquals(1L, server.getAttribute(ours, "Count"));
        assertEquals(12345L, server.getAttribute(ours, "TotalCapacity"));
        assertEquals(DirectMemory.stats().reserved(), server.getAttribute(ours, "MemoryUsed"));
        DirectMemory.free(b);
        assertEquals(0L, server.getAttribute(ours, "Count"));
    }
}
