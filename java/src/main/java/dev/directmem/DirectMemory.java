package dev.directmem;

import java.lang.ref.Cleaner;
import java.lang.ref.Reference;
import java.lang.ref.WeakReference;
import java.nio.ByteBuffer;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.LongAdder;

/**
 * Off-heap {@link ByteBuffer}s allocated, tracked and limited by libdirectmem, freed by a
 * {@link Cleaner} when they become unreachable, or at once by {@link #free}.
 *
 * <p>Like {@link ByteBuffer#allocateDirect}, but: memory is released the moment you call {@link #free}
 * (or when the GC finds the buffer unreachable, whichever comes first, exactly once); an allocation that
 * does not fit asks for a GC and waits until memory is actually returned, in arrival order, so
 * concurrent threads do not fail spuriously; it keeps working under {@code -XX:+DisableExplicitGC};
 * big buffers cost no zeroing (fresh pages from the kernel are already zero); C code in the same
 * process shares the limit and the counters.
 *
 * <p>The limit is the system property {@code directmem.maxDirectMemorySize} ({@code 100m}, {@code 1g},
 * bytes) if set, else the JVM's {@code -XX:MaxDirectMemorySize} if set, else
 * {@code Runtime.getRuntime().maxMemory()}, the JDK's own default. Other properties:
 * {@code directmem.library.path} (the exact libdirectmem file to load), {@code directmem.gcFallback}
 * ({@code false} turns off the DisableExplicitGC fallback), {@code directmem.leakDetection}
 * ({@code true} logs where each buffer that the GC had to reclaim was allocated),
 * {@code directmem.reclaimTimeoutMs} (how long an allocation that does not fit waits for memory after
 * asking for a GC; default 400).
 */
public final class DirectMemory {
    private static final boolean LEAK_DETECTION = Boolean.getBoolean("directmem.leakDetection");
    private static final System.Logger LOG = System.getLogger("dev.directmem");
    private static final Cleaner CLEANER = Cleaner.create(runnable -> {
        Thread t = new Thread(runnable, "directmem-cleaner");
        t.setDaemon(true);
        t.setPriority(Thread.MAX_PRIORITY); // like the JDK's Reference Handler: waiters depend on it
        return t;
    });
    /** Live and explicitly freed buffers that are still reachable, by identity (never by equals/hashCode). */
    private static final ConcurrentHashMap<Key, Tracked> BUFFERS = new ConcurrentHashMap<>();
    private static final LongAdder RECLAIMED_BY_GC = new LongAdder();

    /** How long an allocation waits for memory after asking for a GC; the JDK sleeps about 500 ms in total. */
    static final int RECLAIM_TIMEOUT_MS = Integer.getInteger("directmem.reclaimTimeoutMs", 400);

    static {
        Native.setLimit0(initialLimit());
        Native.setReclaimTimeout0(RECLAIM_TIMEOUT_MS);
        Native.installReclaimHook0();
        DirectMemoryPool.register();
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
        long[] out = new long[1];
        ByteBuffer buffer = Native.allocate0(capacity, alignment, out);
        if (buffer == null) {
            throw failure((int) out[0], capacity, alignment);
        }
        long cleaner = out[0];
        try {
            Tracked tracked = new Tracked(buffer, cleaner, capacity);
            BUFFERS.put(tracked.key, tracked);
            CLEANER.register(buffer, tracked);
        } catch (Throwable t) {
            Native.clean0(cleaner); // never leak the block if tracking it failed
            throw t;
        }
        return buffer;
    }

    /**
     * Frees a buffer from {@link #allocate} now, instead of waiting for the GC. Using the buffer (or any
     * slice, duplicate or view of it) afterwards is undefined behaviour, as after
     * {@code Unsafe.invokeCleaner}: the memory may already belong to another buffer.
     *
     * @return true if this call freed it; false if it was already freed (a later buffer that reuses
     *         the address is left intact)
     * @throws NullPointerException if buffer is null
     * @throws IllegalArgumentException if buffer is a heap buffer, a direct buffer not allocated here, or
     *         a slice, duplicate or view (free the buffer that {@link #allocate} returned)
     */
    public static boolean free(ByteBuffer buffer) {
        Objects.requireNonNull(buffer, "buffer");
        if (!buffer.isDirect()) {
            throw new IllegalArgumentException("not a direct buffer: " + buffer);
        }
        Tracked tracked = BUFFERS.get(new Key(buffer));
        if (tracked == null) {
            throw new IllegalArgumentException("not a buffer returned by DirectMemory.allocate (a slice, duplicate, "
                    + "view, or a direct buffer from elsewhere): " + buffer);
        }
        try {
            return tracked.freeExplicitly();
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
        return DirectMemoryStats.of(Native.stats0(), RECLAIMED_BY_GC.sum());
    }

    /** The native address of a direct buffer (for tests and diagnostics). */
    static long address(ByteBuffer buffer) {
        return Native.address0(buffer);
    }

    /** Buffers still tracked: live, or freed but still reachable (for tests). */
    static int trackedBuffers() {
        return BUFFERS.size();
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

    /** One buffer's native cleaner; also the Cleaner action, which must not reference the buffer. */
    private static final class Tracked implements Runnable {
        final Key key;
        final long cleaner;
        final int capacity;
        final Throwable allocationSite;
        final AtomicBoolean freed = new AtomicBoolean();

        Tracked(ByteBuffer buffer, long cleaner, int capacity) {
            this.key = new Key(buffer);
            this.cleaner = cleaner;
            this.capacity = capacity;
            this.allocationSite = LEAK_DETECTION ? new Throwable("direct buffer allocated here") : null;
        }

        boolean freeExplicitly() {
            return freed.compareAndSet(false, true) && Native.clean0(cleaner);
        }

        /** The buffer became unreachable. After an explicit free, dm_clean of the stale handle does nothing. */
        @Override
        public void run() {
            BUFFERS.remove(key);
            if (!freed.get() && Native.clean0(cleaner)) {
                RECLAIMED_BY_GC.increment();
                if (allocationSite != null) {
                    LOG.log(System.Logger.Level.WARNING, "a direct buffer of " + capacity
                            + " bytes was reclaimed by the GC without DirectMemory.free", allocationSite);
                }
            }
        }
    }
}
