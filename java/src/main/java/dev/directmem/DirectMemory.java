package dev.directmem;

import com.sun.management.HotSpotDiagnosticMXBean;
import com.sun.management.VMOption;
import java.lang.management.ManagementFactory;
import java.lang.ref.Reference;
import java.nio.ByteBuffer;
import java.util.Objects;

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
 * <p>Every buffer is one block of the library, charged its exact capacity: C code in the process sees
 * each one in {@code dm_get_stats}. The buffer has no attachment of its own, so every slice, duplicate
 * or view made from it (and from those), and on JDK 22+ every {@code MemorySegment.ofBuffer} of any of
 * them, keeps it reachable: its block is freed only when none of them can reach it any more, or by
 * {@link #free}. How the buffer object is made depends on the JDK and its flags (fastest and leanest
 * with {@code --add-opens java.base/java.nio=ALL-UNNAMED}; else, on JDK 22+, with
 * {@code --enable-native-access=ALL-UNNAMED}); see the README.
 *
 * <p>The limit is the system property {@code directmem.maxDirectMemorySize} ({@code 100m}, {@code 1g}, {@code 1t},
 * bytes) if set, else the JVM's {@code -XX:MaxDirectMemorySize} if set (0 included: no direct memory), else
 * {@code Runtime.getRuntime().maxMemory()}, the JDK's own default. Other properties:
 * {@code directmem.library.path} (the exact libdirectmem file to load), {@code directmem.gcFallback}
 * ({@code false} turns off the DisableExplicitGC fallback), {@code directmem.leakDetection}
 * ({@code true} logs where each buffer that the GC had to reclaim was allocated),
 * {@code directmem.jmx} ({@code true}/{@code false}/{@code auto}: whether to register the
 * {@code java.nio:type=BufferPool,name=directmem} MBean; {@code auto} does where JMX is in use already),
 * {@code directmem.reclaimTimeoutMs} (how long an allocation that does not fit waits for memory after
 * asking for a GC, while no waiting allocation is served; default 400).
 */
public final class DirectMemory {

    /** How long an allocation waits for memory after asking for a GC; the JDK sleeps about 500 ms in total. */
    static final int RECLAIM_TIMEOUT_MS = Integer.getInteger("directmem.reclaimTimeoutMs", 400);

    static {
        Native.setLimit0(initialLimit());
        Native.setReclaimTimeout0(RECLAIM_TIMEOUT_MS);
        Native.installReclaimHook0();
        CleanerThread.start();
        Orphans.freeAll(); // initialises the class now, never at the edge of a stack
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
        // A virtual thread must not wait inside the library: it would pin its carrier (VirtualWait).
        long address;
        if (!VirtualWait.onVirtualThread()) {
            address = Native.allocate0(capacity, alignment, true);
        } else if (VirtualWait.othersWait() || (address = Native.allocate0(capacity, alignment, false)) == -Native.LIMIT) {
            address = VirtualWait.allocate(capacity, alignment);
        }
        if (address <= 0) {
            throw failure((int) -address, capacity, alignment);
        }
        try {
            ByteBuffer buffer = Buffers.wrap(address, capacity);
            LiveBlocks.add(new Block(buffer, address, capacity, CleanerThread.QUEUE));
            return buffer;
        } catch (Throwable t) {
            // Never leak the block if making or tracking its buffer failed: free it now, or, at the edge
            // of the stack, leave it to the cleaner thread (Orphans; stored inline: a call could fail too).
            try {
                Native.free0(address);
            } catch (StackOverflowError e) {
                synchronized (Orphans.ADDRESSES) {
                    if (Orphans.count < Orphans.ADDRESSES.length) Orphans.ADDRESSES[Orphans.count++] = address;
                }
            }
            throw t;
        }
    }

    /**
     * Frees a buffer from {@link #allocate} now, instead of waiting for the GC. Its limit and position
     * become 0, so later use of this buffer object throws ({@code IndexOutOfBoundsException},
     * {@code BufferOverflowException}, ...) instead of touching freed memory. Slices, duplicates and
     * views made earlier are not protected: using them afterwards is undefined behaviour, as after
     * {@code Unsafe.invokeCleaner} (the memory may already belong to another buffer). Views you keep
     * are safe only as long as you do not free: then their root stays live until they are unreachable.
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
        try {
            Block block = LiveBlocks.takeOf(buffer, Buffers.address(buffer));
            if (block == null) {
                if (buffer.limit() == 0) {
                    return false; // freed before (or empty and not ours: nothing to free either way)
                }
                throw new IllegalArgumentException("not a buffer returned by DirectMemory.allocate (a slice, duplicate, "
                        + "view, or a direct buffer from elsewhere): " + buffer);
            }
            // Taken out of LiveBlocks: from here nothing else would free it. At the edge of the stack the
            // native call fails before its code runs; the cleaner thread frees the block then (Orphans).
            int status;
            try {
                status = Native.free0(block.address);
            } catch (StackOverflowError e) {
                synchronized (Orphans.ADDRESSES) {
                    if (Orphans.count < Orphans.ADDRESSES.length) Orphans.ADDRESSES[Orphans.count++] = block.address;
                }
                throw e;
            }
            Block.freed(block.address, status, true);
            return true;
        } finally {
            Reference.reachabilityFence(buffer); // the GC must not find it unreachable during this call
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

    /**
     * Gives the memory kept for reuse back to the system now, as C's {@code dm_trim} (and glibc's
     * {@code malloc_trim}): the pages of the empty slabs the library and every thread keep for their
     * next buffers, and of freed big buffers' mappings. For a program about to go idle or to be
     * measured; without it they go back about a second after their last use (the cleaner thread's
     * tick), or at the next allocations. Live buffers are untouched.
     *
     * @return the bytes given back: what {@link DirectMemoryStats#cached()} said, when no other thread
     *         allocates or frees meanwhile
     */
    public static long trim() {
        return Native.trim0();
    }

    /** The counters of the library (shared with C code in this process), plus buffers reclaimed by the GC. */
    public static DirectMemoryStats stats() {
        return DirectMemoryStats.of(StatsFields.read(), Block.RECLAIMED_BY_GC.sum());
    }

    /** The native address of a direct buffer (for tests and diagnostics). */
    static long address(ByteBuffer buffer) {
        return Native.address0(buffer);
    }

    /** Live buffers (for tests). */
    static int liveBlocks() {
        return LiveBlocks.size();
    }

    private static Error failure(int status, int capacity, int alignment) {
        if (status == Native.LIMIT) {
            DirectMemoryStats s = stats();
            String message = "Cannot reserve " + capacity + " bytes of direct buffer memory (allocated: "
                    + s.reserved() + ", limit: " + s.limit() + ")";
            if (Reclaimer.EXPLICIT_GC_DISABLED && !Reclaimer.GC_FALLBACK) {
                message += "; the JVM runs with -XX:+DisableExplicitGC and -Ddirectmem.gcFallback=false, "
                        + "so unreachable buffers could not be reclaimed";
            } else if (Reclaimer.EXPLICIT_GC_DISABLED) {
                message += "; the JVM runs with -XX:+DisableExplicitGC (directmem asked for a GC through JVMTI)";
            }
            return new OutOfMemoryError(message);
        }
        if (status == Native.NO_MEMORY) {
            return new OutOfMemoryError("Cannot allocate " + capacity + " bytes of direct buffer memory: " + Native.message(status));
        }
        if (status == Native.INVALID_ARGUMENT) {
            throw new IllegalArgumentException("invalid capacity " + capacity + " or alignment " + alignment);
        }
        return new InternalError("libdirectmem failed: " + Native.message(status) + " (status " + status + ")");
    }

    private static long initialLimit() {
        String property = System.getProperty("directmem.maxDirectMemorySize");
        if (property != null) {
            long bytes = Native.parseSize0(property);
            if (bytes >= 0) return bytes;
            Log.log(System.Logger.Level.WARNING, "ignoring directmem.maxDirectMemorySize=" + property
                    + ": expected bytes or a number with a k/m/g/t suffix");
        }
        VMOption vm = vmOption("MaxDirectMemorySize");
        if (vm != null && vm.getOrigin() != VMOption.Origin.DEFAULT) {
            try {
                return Long.parseLong(vm.getValue()); // set on the command line: 0 means no direct memory
            } catch (NumberFormatException ignored) {
                // fall through to the JDK's default
            }
        }
        return Runtime.getRuntime().maxMemory();
    }

    static VMOption vmOption(String name) {
        try {
            return ManagementFactory.getPlatformMXBean(HotSpotDiagnosticMXBean.class).getVMOption(name);
        } catch (RuntimeException | LinkageError e) {
            return null; // not HotSpot, or jdk.management absent
        }
    }
}
