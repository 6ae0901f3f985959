package dev.directmem;

import java.lang.ref.Cleaner;
import java.lang.ref.Reference;
import java.lang.ref.WeakReference;
import java.nio.ByteBuffer;
import java.util.concurrent.atomic.LongAdder;
import java.util.concurrent.locks.LockSupport;

/**
 * One live buffer's memory and how it goes back: by {@link DirectMemory#free} or, once the buffer is
 * unreachable, by the {@link Cleaner}. The Cleaner runs {@link #run} at most once, whichever path comes
 * first, so the memory is released exactly once. The action must not reference the buffer.
 */
abstract class Tracked implements Runnable {
    private static final System.Logger LOG = System.getLogger("dev.directmem");
    private static final boolean LEAK_DETECTION = Boolean.getBoolean("directmem.leakDetection");
    /** The Cleaner's one thread; set when the Cleaner starts it. */
    private static volatile Thread cleanerThread;
    private static final Cleaner CLEANER = Cleaner.create(runnable -> {
        Thread t = new Thread(runnable, "directmem-cleaner");
        t.setDaemon(true);
        t.setPriority(Thread.MAX_PRIORITY); // like the JDK's Reference Handler: waiters depend on it
        cleanerThread = t;
        return t;
    });
    static final LongAdder RECLAIMED_BY_GC = new LongAdder();

    final int capacity;
    private final Throwable allocationSite;
    /**
     * The thread that ran the release, set once, by {@link #run}: the Cleaner's, or the one whose
     * {@link #free} did. A free tells by it whether the release was its own without an atomic: a
     * thread always sees its own write, and no other thread writes its identity there.
     */
    private Thread releasedBy;
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
        if (releasedBy != null) {
            return false;
        }
        cleanable.clean(); // unlinks it and runs run() here and now, unless a racing free got there first
        return releasedBy == Thread.currentThread();
    }

    /** The Cleaner's action: after {@link #free}, or when the GC found the buffer unreachable. */
    @Override
    public final void run() {
        Thread current = Thread.currentThread();
        releasedBy = current;
        release();
        if (current == cleanerThread) { // the GC found it: no free came first
            RECLAIMED_BY_GC.increment();
            if (allocationSite != null) {
                LOG.log(System.Logger.Level.WARNING, "a direct buffer of " + capacity
                        + " bytes was reclaimed by the GC without DirectMemory.free", allocationSite);
            }
        }
    }

    /**
     * Waits, at most {@code maxNanos}, while the Cleaner is running actions (or about to: blocked on a
     * lock on its way); true if it was busy at all. The Cleaner's thread waits on its queue when it has
     * nothing to do, and our actions never wait or sleep (they take monitors and call the library), so
     * its state tells whether buffers a GC already found are still being freed.
     */
    static boolean awaitCleaner(long maxNanos) {
        Thread cleaner = cleanerThread;
        if (cleaner == null || cleaner == Thread.currentThread() || isIdle(cleaner)) {
            return false;
        }
        long deadline = System.nanoTime() + maxNanos;
        while (!isIdle(cleaner) && System.nanoTime() - deadline < 0) {
            LockSupport.parkNanos(CLEANER_POLL_NANOS);
        }
        return true;
    }

    /** About one release of a big block: polling faster would only take the CPU from the Cleaner. */
    private static final long CLEANER_POLL_NANOS = 20_000;

    private static boolean isIdle(Thread thread) {
        Thread.State state = thread.getState();
        return state == Thread.State.WAITING || state == Thread.State.TIMED_WAITING || state == Thread.State.TERMINATED;
    }

    /** Gives the memory back; runs exactly once. */
    abstract void release();
}
