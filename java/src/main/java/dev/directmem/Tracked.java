package dev.directmem;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.lang.ref.Cleaner;
import java.lang.ref.Reference;
import java.lang.ref.WeakReference;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.LongAdder;

/**
 * One live buffer's memory and how it goes back: by {@link DirectMemory#free} or, once the buffer is
 * unreachable, by the {@link Cleaner}. The Cleaner runs {@link #run} at most once, whichever path comes
 * first, so the memory is released exactly once. The action must not reference the buffer.
 */
abstract class Tracked implements Runnable {
    private static final System.Logger LOG = System.getLogger("dev.directmem");
    private static final boolean LEAK_DETECTION = Boolean.getBoolean("directmem.leakDetection");
    private static final Cleaner CLEANER = Cleaner.create(runnable -> {
        Thread t = new Thread(runnable, "directmem-cleaner");
        t.setDaemon(true);
        t.setPriority(Thread.MAX_PRIORITY); // like the JDK's Reference Handler: waiters depend on it
        return t;
    });
    static final LongAdder RECLAIMED_BY_GC = new LongAdder();

    private static final int LIVE = 0, FREED = 1, RECLAIMED = 2;
    private static final VarHandle STATE;

    static {
        try {
            STATE = MethodHandles.lookup().findVarHandle(Tracked.class, "state", int.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    final int capacity;
    private final Throwable allocationSite;
    @SuppressWarnings("unused") // through STATE
    private volatile int state;
    private Cleaner.Cleanable cleanable;
    /** Tells this buffer from its slices and duplicates: never by equals or address alone. */
    private Reference<Object> identity;

    Tracked(int capacity) {
        this.capacity = capacity;
        this.allocationSite = LEAK_DETECTION ? new Throwable("direct buffer allocated here") : null;
    }

    /**
     * Registers the Cleaner; call before the buffer is published. The Cleaner's own phantom
     * reference doubles as the identity (a Cleanable is a PhantomReference in OpenJDK since 9), so a
     * buffer costs one reference object, as with the JDK; elsewhere a weak reference is added.
     */
    @SuppressWarnings("unchecked")
    final void track(ByteBuffer buffer) {
        cleanable = CLEANER.register(buffer, this);
        identity = cleanable instanceof Reference ? (Reference<Object>) cleanable : new WeakReference<>(buffer);
    }

    /** True if {@code buffer} is this very buffer object, and it has not been released. */
    final boolean isBufferOf(ByteBuffer buffer) {
        return identity.refersTo(buffer);
    }

    /** Releases the memory now; false if that has already been done (by another free). */
    final boolean free() {
        if (!STATE.compareAndSet(this, LIVE, FREED)) {
            return false;
        }
        cleanable.clean(); // unlinks it from the Cleaner and runs run(), here and now
        return true;
    }

    /** The Cleaner's action: after {@link #free}, or when the GC found the buffer unreachable. */
    @Override
    public final void run() {
        // After free() the state is FREED already: a plain read spares the free path a failing CAS.
        boolean byGc = state == LIVE && STATE.compareAndSet(this, LIVE, RECLAIMED);
        release();
        if (byGc) {
            RECLAIMED_BY_GC.increment();
            if (allocationSite != null) {
                LOG.log(System.Logger.Level.WARNING, "a direct buffer of " + capacity
                        + " bytes was reclaimed by the GC without DirectMemory.free", allocationSite);
            }
        }
    }

    /** Gives the memory back; runs exactly once. */
    abstract void release();
}
