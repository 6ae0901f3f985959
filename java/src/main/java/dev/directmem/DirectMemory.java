package dev.directmem;

import java.lang.ref.Reference;
import java.lang.ref.WeakReference;
import java.nio.ByteBuffer;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Off-heap {@link ByteBuffer}s allocated, tracked and limited by libdirectmem, freed by a
 * {@link java.lang.ref.Cleaner} when they become unreachable, or at once by {@link #free}.
 *
 * <p>Like {@link ByteBuffer#allocateDirect}, but: memory is released the moment you call {@link #free}
 * (or when the GC finds the buffer unreachable, whichever comes first, exactly once); an allocation that
 * does not fit asks for a GC and waits until memory is actually returned, in arrival order, so
 * concurrent threads do not fail spuriously; it keeps working under {@code -XX:+DisableExplicitGC};
 * big buffers cost no zeroing (fresh pages from the kernel are already zero); C code in the same
 * process shares the limit and the counters.
 *
 * <p>Buffers of up to 64 KiB are slices of slabs (blocks of 64 KiB to 1 MiB, see {@code Slabs}), which
 * makes them as cheap as the JDK's; the limit and {@code reserved} count whole slabs, the memory really
 * taken, while {@code count} and {@code capacity} count buffers. C code calling {@code dm_stats} sees
 * each slab as one block.
 *
 * <p>The limit is the system property {@code directmem.maxDirectMemorySize} ({@code 100m}, {@code 1g},
 * bytes) if set, else the JVM's {@code -XX:MaxDirectMemorySize} if set, else
 * {@code Runtime.getRuntime().maxMemory()}, the JDK's own default. Other properties:
 * {@code directmem.library.path} (the exact libdirectmem file to load), {@code directmem.gcFallback}
 * ({@code false} turns off the DisableExplicitGC fallback), {@code directmem.leakDetection}
 * ({@code true} logs where each buffer that the GC had to reclaim was allocated),
 * {@code directmem.jmx} ({@code true}/{@code false}/{@code auto}: whether to register the
 * {@code java.nio:type=BufferPool,name=directmem} MBean; {@code auto} does where JMX is in use already),
 * {@code directmem.reclaimTimeoutMs} (how long an allocation that does not fit waits for memory after
 * asking for a GC; default 400).
 */
public final class DirectMemory {
    private static final System.Logger LOG = System.getLogger("dev.directmem");
    /** Live buffers with a block of their own, by identity (never by equals/hashCode). */
    private static final ConcurrentHashMap<Key, Block> BLOCKS = new ConcurrentHashMap<>();

    /** How long an allocation waits for memory after asking for a GC; the JDK sleeps about 500 ms in total. */
    static final int RECLAIM_TIMEOUT_MS = Integer.getInteger("directmem.reclaimTimeoutMs", 400);

    static {
        Native.setLimit0(initialLimit());
        Native.setReclaimTimeout0(RECLAIM_TIMEOUT_MS);
        Native.installReclaimHook0();
        DirectMemoryPool.registerIfWanted();
    }

    private DirectMemory() {}

    /**
     * A new direct buffer of {@code capacity} bytes, zeroed, big-endian, position 0, limit = capacity.
     *
     * @throws IllegalArgumentException if capacity is negative
     * @throws OutOfMemoryError if the limit would be exceeded even after reclaiming (the message says
     *         "direct buffer memory", the size asked for, what is reserved and the limit), or the system
     *         has no memory left
     */
    public static ByteBuffer allocate(int capacity) {
        return allocateAligned(capacity, 0);
    }

    /**
     * Like {@link #allocate}, with the buffer's address a multiple of {@code alignment}.
     *
     * @param alignment a power of two (up to 1 GiB), or 0 for the platform default
     * @throws IllegalArgumentException if capacity is negative or alignment is not 0 or a power of two
     */
    public static ByteBuffer allocateAligned(int capacity, int alignment) {
        if (capacity < 0) {
            throw new IllegalArgumentException("capacity must not be negative: " + capacity);
        }
        if (alignment < 0 || (alignment & (alignment - 1)) != 0) {
            throw new IllegalArgumentException("alignment must be 0 or a power of two: " + alignment);
        }
        ByteBuffer small = Slabs.allocate(capacity, alignment);
        return small != null ? small : allocateBlock(capacity, alignment);
    }

    /** A block of its own from the library: big buffers, or small ones when no slab has room. */
    private static ByteBuffer allocateBlock(int capacity, int alignment) {
        long[] out = new long[1];
        ByteBuffer buffer = Native.allocate0(capacity, alignment, true, out);
        if (buffer == null) {
            throw failure((int) out[0], capacity, alignment);
        }
        Block block = new Block(buffer, out[0], capacity);
        try {
            block.track(buffer);
            BLOCKS.put(block.key, block);
        } catch (Throwable t) {
            Native.clean0(block.cleaner); // never leak the block if tracking it failed
            throw t;
        }
        return buffer;
    }

    /**
     * Frees a buffer from {@link #allocate} now, instead of waiting for the GC. Its limit and position
     * become 0, so later use of this buffer object throws ({@code IndexOutOfBoundsException},
     * {@code BufferOverflowException}, ...) instead of touching freed memory. Slices, duplicates and
     * views made earlier are not protected: using them afterwards is undefined behaviour, as after
     * {@code Unsafe.invokeCleaner} (the memory may already belong to another buffer).
     *
     * @return true if this call freed it; false if it was already freed (taken to be so when the buffer is
     *         not live and its limit is 0); a later buffer that reuses the address is left intact
     * @throws NullPointerException if buffer is null
     * @throws IllegalArgumentException if buffer is a heap buffer, a direct buffer not allocated here, or
     *         a slice, duplicate or view (free the buffer that {@link #allocate} returned)
     */
    public static boolean free(ByteBuffer buffer) {
        Objects.requireNonNull(buffer, "buffer");
        if (!buffer.isDirect()) {
            throw new IllegalArgumentException("not a direct buffer: " + buffer);
        }
        Tracked tracked = Slabs.find(buffer);
        if (tracked == null) {
            tracked = BLOCKS.get(new Key(buffer));
        }
        if (tracked == null) {
            if (buffer.limit() == 0) {
                return false; // freed before (or empty and not ours: nothing to free either way)
            }
            throw new IllegalArgumentException("not a buffer returned by DirectMemory.allocate (a slice, duplicate, "
                    + "view, or a direct buffer from elsewhere): " + buffer);
        }
        try {
            buffer.limit(0); // before the release, so a racing free that misses the buffer sees it freed
            return tracked.free();
        } finally {
            Reference.reachabilityFence(buffer); // the GC's Cleaner must not win the race with this call
        }
    }

    /** The limit on reserved bytes, shared with C code in this process. */
    public static long limit() {
        return Native.limit0();
    }

    /**
     * Sets the limit. It may go below what is reserved: existing buffers stay valid, new allocations
     * wait or fail until enough is freed.
     *
     * @throws IllegalArgumentException if bytes is negative
     */
    public static void setLimit(long bytes) {
        if (bytes < 0) {
            throw new IllegalArgumentException("limit must not be negative: " + bytes);
        }
        Native.setLimit0(bytes);
    }

    /** The counters of the library (shared with C code in this process), plus buffers reclaimed by the GC. */
    public static DirectMemoryStats stats() {
        return DirectMemoryStats.of(Native.stats0(), Slabs.usage(), Tracked.RECLAIMED_BY_GC.sum());
    }

    /** The native address of a direct buffer (for tests and diagnostics). */
    static long address(ByteBuffer buffer) {
        return Native.address0(buffer);
    }

    /** Buffers with a block of their own that are live (for tests). */
    static int liveBlocks() {
        return BLOCKS.size();
    }

    private static Error failure(int status, int capacity, int alignment) {
        switch (status) {
            case Native.LIMIT: {
                DirectMemoryStats s = stats();
                String message = "Cannot reserve " + capacity + " bytes of direct buffer memory (allocated: "
                        + s.reserved() + ", limit: " + s.limit() + ")";
                if (Reclaimer.EXPLICIT_GC_DISABLED && !Reclaimer.GC_FALLBACK) {
                    message += "; the JVM runs with -XX:+DisableExplicitGC and -Ddirectmem.gcFallback=false, "
                            + "so unreachable buffers could not be reclaimed";
                } else if (Reclaimer.EXPLICIT_GC_DISABLED) {
                    message += "; the JVM runs with -XX:+DisableExplicitGC (directmem asked for a GC through gcRun)";
                }
                return new OutOfMemoryError(message);
            }
            case Native.NO_MEMORY:
                return new OutOfMemoryError("Cannot allocate " + capacity + " bytes of direct buffer memory: the system allocator refused");
            case Native.INVALID_ARGUMENT:
                throw new IllegalArgumentException("invalid capacity " + capacity + " or alignment " + alignment);
            default:
                return new InternalError("libdirectmem failed with status " + status);
        }
    }

    private static long initialLimit() {
        String property = System.getProperty("directmem.maxDirectMemorySize");
        if (property != null) {
            long bytes = Native.parseSize0(property);
            if (bytes >= 0) return bytes;
            LOG.log(System.Logger.Level.WARNING, "ignoring directmem.maxDirectMemorySize=" + property
                    + ": expected bytes or a number with a k/m/g suffix");
        }
        String vm = Reclaimer.vmOption("MaxDirectMemorySize");
        if (vm != null) {
            try {
                long bytes = Long.parseLong(vm);
                if (bytes > 0) return bytes; // 0 means "not set"
            } catch (NumberFormatException ignored) {
                // fall through to the JDK's default
            }
        }
        return Runtime.getRuntime().maxMemory();
    }

    /** A weak, identity-compared key: the map never keeps a buffer alive and never confuses equal contents. */
    private static final class Key extends WeakReference<ByteBuffer> {
        private final int hash;

        Key(ByteBuffer buffer) {
            super(buffer);
            hash = System.identityHashCode(buffer);
        }

        @Override
        public int hashCode() {
            return hash;
        }

        @Override
        public boolean equals(Object o) {
            if (this == o) return true;
            if (!(o instanceof Key)) return false;
            Object mine = get();
            return mine != null && mine == ((Key) o).get();
        }
    }

    /** A buffer with a block of its own; the block goes back through its library cleaner handle. */
    private static final class Block extends Tracked {
        final Key key;
        final long cleaner;

        Block(ByteBuffer buffer, long cleaner, int capacity) {
            super(capacity);
            this.key = new Key(buffer);
            this.cleaner = cleaner;
        }

        @Override
        void release() {
            BLOCKS.remove(key);
            Native.clean0(cleaner);
        }
    }
}
