package dev.directmem;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicReferenceArray;

/**
 * Buffers of up to 64 KiB, carved out of slabs: blocks of 64 KiB to 1 MiB that the library allocates
 * and accounts like any other block, divided into equal slots of a power-of-two size.
 *
 * <p>Why: a native call that wraps memory in a new {@code ByteBuffer} costs about 400 ns, several times
 * what {@code ByteBuffer.allocateDirect} takes for a small buffer. Here a small buffer is a slice of a
 * slab, taken and given back in Java; the library is called only when a slab is added or released.
 *
 * <p>Memory is handed out zeroed: a slot is zeroed when it is released (slabs come zeroed from the
 * library). A slab whose last buffer is released goes back to the library at once unless it is its size
 * class's current slab; {@link #trim} (run before each GC the library asks for) releases those too, so
 * cached slabs never stand between a waiting allocation and the limit. A slab is only ever added
 * without waiting: when the limit leaves no room, the caller takes the ordinary path, which reclaims.
 *
 * <p>Finding the slot of a buffer handed to {@link DirectMemory#free} needs its address, and Java offers
 * it only modulo a power of two up to 1 GiB ({@link ByteBuffer#alignmentOffset}). Slabs are aligned to
 * their size, so that suffices to find the slot; slabs 1 GiB apart share a lookup entry and are all
 * tried, and the slot's identity check (not the address) decides.
 */
final class Slabs {
    private static final int MIN_SHIFT = 4; // 16-byte slots
    private static final int MAX_SHIFT = 16;
    static final int MAX_CAPACITY = 1 << MAX_SHIFT;
    private static final int MIN_SLAB_SHIFT = 16; // 64 KiB, also the lookup granularity
    private static final int MIN_SLOTS_SHIFT = 4; // at least 16 slots per slab
    private static final int WINDOW = 1 << 30; // the widest unit alignmentOffset accepts
    private static final byte[] ZEROS = new byte[MAX_CAPACITY];

    private static final SizeClass[] CLASSES = new SizeClass[MAX_SHIFT - MIN_SHIFT + 1];
    private static final AtomicReferenceArray<Slab[]> BY_ADDRESS = new AtomicReferenceArray<>(WINDOW >>> MIN_SLAB_SHIFT);
    /** Slabs ever added (those released are this minus the live ones). Guarded by Slabs.class. */
    private static long slabsTaken;
    /** Buffers taken from slabs already released (the others count their own, per slot). Guarded by Slabs.class. */
    private static long buffersTakenFromReleasedSlabs;

    static {
        for (int shift = MIN_SHIFT; shift <= MAX_SHIFT; shift++) {
            CLASSES[shift - MIN_SHIFT] = new SizeClass(shift);
        }
    }

    private Slabs() {}

    /**
     * A zeroed buffer of {@code capacity} bytes whose address is a multiple of {@code alignment}, or
     * null if it is too big for a slab or no slab has room and none can be added without waiting.
     */
    static ByteBuffer allocate(int capacity, int alignment) {
        int size = Math.max(Math.max(capacity, alignment), 1);
        if (size > MAX_CAPACITY) {
            return null;
        }
        int shift = Math.max(MIN_SHIFT, 32 - Integer.numberOfLeadingZeros(size - 1));
        return CLASSES[shift - MIN_SHIFT].allocate(capacity);
    }

    /** The live slab buffer {@code buffer} is (the very object, not a slice or duplicate), or null. */
    static Tracked find(ByteBuffer buffer) {
        if (buffer.capacity() > MAX_CAPACITY) {
            return null;
        }
        int low = buffer.alignmentOffset(0, WINDOW);
        Slab[] candidates = BY_ADDRESS.get(low >>> MIN_SLAB_SHIFT);
        if (candidates == null) {
            return null;
        }
        for (Slab slab : candidates) {
            Tracked owner = slab.ownerAt(low & (slab.bytes - 1));
            if (owner != null && owner.isBufferOf(buffer)) {
                return owner;
            }
        }
        return null;
    }

    /** Releases every slab no buffer uses, current ones included. */
    static void trim() {
        for (SizeClass c : CLASSES) {
            c.trim();
        }
    }

    /** What the library counts as slabs, and the buffers carved from them (for {@link DirectMemory#stats}). */
    record Usage(long slabs, long slabBytes, long buffers, long bufferCapacity, long buffersTaken, long slabsTaken) {
        /** Buffers released so far: every one taken is live or released. */
        long buffersReleased() {
            return buffersTaken - buffers;
        }

        /** Slabs released so far, likewise. */
        long slabsReleased() {
            return slabsTaken - slabs;
        }
    }

    /** A snapshot; exact when no thread allocates or frees meanwhile. */
    static Usage usage() {
        long slabs = 0, slabBytes = 0, buffers = 0, capacity = 0, taken, slabsEver;
        synchronized (Slabs.class) {
            taken = buffersTakenFromReleasedSlabs;
            slabsEver = slabsTaken;
        }
        for (SizeClass c : CLASSES) {
            for (Slab slab : c.snapshot()) {
                slabs++;
                slabBytes += slab.bytes;
                taken += slab.buffersTaken();
                for (int i = 0; i < slab.slots; i++) {
                    Tracked owner = slab.owner(i);
                    if (owner != null) {
                        buffers++;
                        capacity += owner.capacity;
                    }
                }
            }
        }
        return new Usage(slabs, slabBytes, buffers, capacity, taken, slabsEver);
    }

    /** Makes {@code slab} findable by address, or forgets it. */
    private static synchronized void index(Slab slab, boolean add) {
        if (add) {
            slabsTaken++;
        } else {
            buffersTakenFromReleasedSlabs += slab.buffersTaken();
        }
        int first = slab.low >>> MIN_SLAB_SHIFT;
        for (int i = first; i < first + (slab.bytes >>> MIN_SLAB_SHIFT); i++) {
            Slab[] old = BY_ADDRESS.get(i);
            Slab[] updated;
            if (add) {
                updated = old == null ? new Slab[] {slab} : Arrays.copyOf(old, old.length + 1);
                updated[updated.length - 1] = slab;
            } else {
                updated = Arrays.stream(old).filter(s -> s != slab).toArray(Slab[]::new);
                if (updated.length == 0) updated = null;
            }
            BY_ADDRESS.set(i, updated);
        }
    }

    /** The slabs of one slot size. */
    private static final class SizeClass {
        final int shift;
        final int slabBytes;
        /** Where allocations look first; replaced (under the lock) when it is full. */
        volatile Slab current;
        /** Every slab of this class not yet released. Guarded by this. */
        private final ArrayList<Slab> slabs = new ArrayList<>();
        /**
         * Slabs that got a slot back since they were last looked at (each at most once, see
         * {@link Slab#queued}): where room is found when the current slab is full, without walking
         * every slab. A slab with room is always here or current.
         */
        private final ConcurrentLinkedQueue<Slab> withRoom = new ConcurrentLinkedQueue<>();

        SizeClass(int shift) {
            this.shift = shift;
            this.slabBytes = 1 << Math.max(MIN_SLAB_SHIFT, shift + MIN_SLOTS_SHIFT);
        }

        ByteBuffer allocate(int capacity) {
            Slab slab = current;
            if (slab != null) {
                int slot = slab.claim();
                if (slot >= 0) {
                    return slab.handOut(slot, capacity);
                }
            }
            return allocateSlow(capacity);
        }

        private synchronized ByteBuffer allocateSlow(int capacity) {
            for (Slab slab; (slab = withRoom.poll()) != null; ) {
                slab.queued = false; // before the claim: a slot released after it queues the slab again
                int slot = slab.claim(); // -1 if it filled up meanwhile, or was released
                if (slot >= 0) {
                    current = slab;
                    return slab.handOut(slot, capacity);
                }
            }
            Slab fresh = Slab.create(this);
            if (fresh == null) {
                return null;
            }
            slabs.add(fresh);
            index(fresh, true);
            current = fresh;
            return fresh.handOut(fresh.claim(), capacity); // a fresh slab has room: claim cannot fail
        }

        /** Called when a slab's last buffer went; keeps it only as the current slab. */
        synchronized void releaseIfUnused(Slab slab, boolean evenIfCurrent) {
            if ((slab != current || evenIfCurrent) && slabs.contains(slab) && slab.retire()) {
                if (slab == current) current = null;
                slabs.remove(slab);
                index(slab, false);
                slab.giveBack();
            }
        }

        synchronized void trim() {
            for (Slab slab : new ArrayList<>(slabs)) {
                releaseIfUnused(slab, true);
            }
        }

        synchronized Slab[] snapshot() {
            return slabs.toArray(new Slab[0]);
        }
    }

    /**
     * One block from the library, cut into {@code slots} slots of {@code 1 << shift} bytes. The bitmap
     * alone says which slots are taken: one CAS to take a slot, one to give it back, nothing shared
     * besides (except that a slab getting a slot back joins its class's queue of slabs with room, if
     * it is not on it yet), which is what keeps a small buffer as cheap as the JDK's.
     */
    private static final class Slab {
        private static final VarHandle WORDS, OWNERS, QUEUED;

        static {
            WORDS = MethodHandles.arrayElementVarHandle(long[].class);
            OWNERS = MethodHandles.arrayElementVarHandle(Tracked[].class);
            try {
                QUEUED = MethodHandles.lookup().findVarHandle(Slab.class, "queued", boolean.class);
            } catch (ReflectiveOperationException e) {
                throw new ExceptionInInitializerError(e);
            }
        }

        final SizeClass sizeClass;
        final int shift;
        final int bytes;
        final int slots;
        final ByteBuffer memory;
        final long cleaner;
        /** The slab's address modulo {@link #WINDOW}. */
        final int low;
        /** One bit per slot, set while the slot is taken; the bits past the last slot are always set. */
        private final long[] taken;
        private final long tailBits;
        /** The buffer in each slot; null while the slot is free (or being released). */
        private final Tracked[] owners;
        /** Buffers handed out per slot: written only by the slot's holder, so no atomics are needed. */
        private final long[] uses;
        /**
         * Set, under the size class's lock, while the slab is checked for being unused and after it
         * was released. A claim sets its bit and then reads this; retiring sets this and then reads the
         * bits: one of the two sees the other (both are volatile accesses), so no slot is ever taken
         * from a released slab.
         */
        private volatile boolean retired;
        /** Where to start looking for a free bit (racy on purpose: only a hint). */
        private int hint;
        /** Set while the slab is on its class's {@code withRoom} queue. */
        volatile boolean queued;

        private Slab(SizeClass sizeClass, ByteBuffer memory, long cleaner) {
            this.sizeClass = sizeClass;
            this.shift = sizeClass.shift;
            this.bytes = sizeClass.slabBytes;
            this.slots = bytes >>> shift;
            this.memory = memory;
            this.cleaner = cleaner;
            this.low = memory.alignmentOffset(0, WINDOW);
            this.taken = new long[(slots + 63) >>> 6];
            this.tailBits = (slots & 63) == 0 ? 0 : -1L << (slots & 63);
            taken[taken.length - 1] = tailBits;
            this.owners = new Tracked[slots];
            this.uses = new long[slots];
        }

        /** A new slab from the library if it fits under the limit now, else null. */
        static Slab create(SizeClass sizeClass) {
            long[] out = new long[1];
            ByteBuffer memory = Native.allocate0(sizeClass.slabBytes, sizeClass.slabBytes, false, out);
            if (memory == null) {
                return null; // the limit (or the system) says no: the ordinary path will reclaim
            }
            return new Slab(sizeClass, memory, out[0]);
        }

        /** A free slot, now taken, or -1 if the slab is full or retired. */
        int claim() {
            int words = taken.length;
            for (int i = 0, w = hint; i < words; i++, w = w + 1 == words ? 0 : w + 1) {
                long bits = (long) WORDS.getVolatile(taken, w);
                while (bits != -1L) {
                    int bit = Long.numberOfTrailingZeros(~bits);
                    if (WORDS.compareAndSet(taken, w, bits, bits | (1L << bit))) {
                        if (retired) {
                            WORDS.getAndBitwiseAnd(taken, w, ~(1L << bit));
                            return -1;
                        }
                        hint = w;
                        return (w << 6) | bit;
                    }
                    bits = (long) WORDS.getVolatile(taken, w);
                }
            }
            return -1;
        }

        ByteBuffer handOut(int slot, int capacity) {
            ByteBuffer buffer = memory.slice(slot << shift, capacity);
            SlabBuffer owner = new SlabBuffer(this, slot, capacity);
            try {
                owner.track(buffer);
            } catch (Throwable t) {
                releaseSlot(slot, 0); // untouched memory: nothing to zero
                throw t;
            }
            uses[slot]++;
            OWNERS.setRelease(owners, slot, owner);
            return buffer;
        }

        Tracked owner(int slot) {
            return (Tracked) OWNERS.getAcquire(owners, slot);
        }

        /** The owner of the slot starting {@code offset} bytes into this slab, or null. */
        Tracked ownerAt(int offset) {
            return (offset & ((1 << shift) - 1)) == 0 ? owner(offset >>> shift) : null;
        }

        long buffersTaken() {
            long sum = 0;
            for (long u : uses) sum += u;
            return sum;
        }

        void release(int slot, int capacity) {
            OWNERS.setRelease(owners, slot, null);
            releaseSlot(slot, capacity);
        }

        private void releaseSlot(int slot, int dirtyBytes) {
            zero(slot << shift, dirtyBytes); // the next holder gets zeroed memory
            WORDS.getAndBitwiseAnd(taken, slot >>> 6, ~(1L << slot)); // publishes the zeros too
            if (!queued && QUEUED.compareAndSet(this, false, true)) {
                sizeClass.withRoom.add(this);
            }
            // The current slab stays; any other goes back to the library once unused.
            if (sizeClass.current != this && isUnused()) {
                sizeClass.releaseIfUnused(this, false);
            }
        }

        /** Small ranges word by word (a bulk copy's set-up costs more); slots are 16-byte multiples. */
        private void zero(int offset, int length) {
            if (length <= 256) {
                for (int i = 0; i < length; i += 8) memory.putLong(offset + i, 0L);
            } else {
                memory.put(offset, ZEROS, 0, length);
            }
        }

        private boolean isUnused() {
            for (int w = 0; w < taken.length; w++) {
                if ((long) WORDS.getVolatile(taken, w) != (w == taken.length - 1 ? tailBits : 0L)) return false;
            }
            return true;
        }

        /** Closes the slab to claims if no slot is taken; true if it is now retired. Under the class lock. */
        boolean retire() {
            retired = true;
            if (isUnused()) {
                return true;
            }
            retired = false; // a claim got in first (it may have backed off: it will find the slab again)
            return false;
        }

        void giveBack() {
            Native.clean0(cleaner);
        }
    }

    /** A buffer in a slab slot. */
    private static final class SlabBuffer extends Tracked {
        private final Slab slab;
        private final int slot;

        SlabBuffer(Slab slab, int slot, int capacity) {
            super(capacity);
            this.slab = slab;
            this.slot = slot;
        }

        @Override
        void release() {
            slab.release(slot, capacity);
        }
    }
}
