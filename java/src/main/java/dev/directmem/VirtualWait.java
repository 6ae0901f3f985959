package dev.directmem;

import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

/**
 * How a virtual thread waits for memory: in Java, parked, so that it unmounts and its carrier can run
 * the virtual threads that hold memory and will free it. Waiting inside the library (a native
 * condition variable) would pin the carrier: with as many waiters as carriers, nobody could free.
 * Platform threads keep the library's wait.
 *
 * <p>The same protocol as the library's, in Java:
 * <ul>
 *   <li>first come, first served: virtual threads queue, and only the head tries; a newcomer joins
 *       the queue when others wait (taking what the head waits for is what makes the JDK's waiters
 *       fail spuriously);</li>
 *   <li>woken when memory is actually returned: every free of a Java buffer unparks the head;</li>
 *   <li>a reclaim round ({@link Reclaimer#reclaim}: a GC) at once when buffers come back only through
 *       the GC, and only when memory stops flowing while they are freed explicitly: then the head asks
 *       once it has seen no free for {@link #QUIET_NANOS}; one round at a time, the next no sooner
 *       than the last one's length after it, and twice as long again (up to 100 ms) each time a
 *       round brought nothing back (back-to-back GCs while a holder sleeps starved everyone: 230
 *       full GCs in 1.4 s);</li>
 *   <li>refused only when the queue has stood still for a whole timeout
 *       ({@code directmem.reclaimTimeoutMs}: no waiter served), after a last try that takes memory
 *       if it fits, head or not. A waiter in a queue that moves is not refused however long the
 *       queue: the memory it waits for is coming; a queue stalled for a timeout all fails
 *       together.</li>
 * </ul>
 */
final class VirtualWait {
    private static final MethodHandle IS_VIRTUAL = isVirtualHandle();
    private static final ConcurrentLinkedQueue<Thread> QUEUE = new ConcurrentLinkedQueue<>();
    private static final AtomicInteger WAITING = new AtomicInteger();
    /** Java frees seen while virtual threads waited: tells the head whether memory flows. */
    private static final AtomicLong FREES = new AtomicLong();
    private static final AtomicBoolean ROUND = new AtomicBoolean();
    /** Waiters served so far: while it grows the queue moves, and no deadline comes. */
    private static final AtomicLong SERVED = new AtomicLong();
    /** How long the head waits for a free before it asks for a round, while explicit frees flow. */
    private static final long QUIET_NANOS = TimeUnit.MILLISECONDS.toNanos(3);
    /** Explicit frees this recent mean memory flows back without a GC. */
    private static final long FLOWING_NANOS = TimeUnit.MILLISECONDS.toNanos(20);
    /** Bounds of the wait between two rounds while they bring nothing back (the library's too). */
    private static final long MIN_SPACING_NANOS = TimeUnit.MILLISECONDS.toNanos(1);
    private static final long MAX_SPACING_NANOS = TimeUnit.MILLISECONDS.toNanos(100);
    private static volatile long lastExplicitFree = System.nanoTime() - FLOWING_NANOS;

    private VirtualWait() {}

    /** True on a virtual thread (JDK 21+). */
    static boolean onVirtualThread() {
        if (IS_VIRTUAL == null) return false;
        try {
            return (boolean) IS_VIRTUAL.invokeExact(Thread.currentThread());
        } catch (Throwable t) {
            return false;
        }
    }

    /** True while virtual threads wait: a newcomer must queue behind them. */
    static boolean othersWait() {
        return WAITING.get() > 0;
    }

    /** An address, or minus the failing status (LIMIT once the time is up). */
    static long allocate(int capacity, int alignment) {
        long timeout = TimeUnit.MILLISECONDS.toNanos(DirectMemory.RECLAIM_TIMEOUT_MS);
        long deadline = System.nanoTime() + timeout;
        long served = SERVED.get();
        // Rounds are spaced as the library spaces its: never back to back, at most 100 ms apart.
        long maxSpacing = Math.max(MIN_SPACING_NANOS, Math.min(timeout / 4, MAX_SPACING_NANOS));
        long nextRound = System.nanoTime(), spacing = 0, freesAfterRound = -1;
        Thread me = Thread.currentThread();
        boolean interrupted = Thread.interrupted(); // cleared while it waits: see park
        WAITING.incrementAndGet();
        QUEUE.add(me);
        try {
            while (true) {
                long seen = FREES.get();
                if (QUEUE.peek() == me) {
                    long address = Native.allocate0(capacity, alignment, false);
                    if (address != -Native.LIMIT) return served(address);
                }
                if (SERVED.get() != served) { // the queue moved: the timeout counts from now
                    served = SERVED.get();
                    deadline = System.nanoTime() + timeout;
                }
                long left = deadline - System.nanoTime();
                if (left <= 0) { // the limit must really be in the way
                    return served(Native.allocate0(capacity, alignment, false));
                }
                // Explicit frees lately: memory flows back by itself, so wait for it quietly first.
                boolean flowing = System.nanoTime() - lastExplicitFree < FLOWING_NANOS;
                if (flowing) interrupted |= park(Math.min(left, QUIET_NANOS));
                if (QUEUE.peek() == me && FREES.get() == seen && System.nanoTime() - nextRound >= 0
                        && ROUND.compareAndSet(false, true)) {
                    long started = System.nanoTime();
                    try { // memory stopped flowing: only the GC can find more
                        Reclaimer.reclaim(capacity);
                    } finally {
                        ROUND.set(false);
                    }
                    // The next round no sooner than this one's length, doubled while rounds bring
                    // nothing back: a holder that frees late is waited for, not GC'd at in a loop.
                    long ended = System.nanoTime(), took = ended - started;
                    spacing = FREES.get() == freesAfterRound ? Math.min(Math.max(2 * spacing, took), maxSpacing) : took;
                    freesAfterRound = FREES.get();
                    nextRound = ended + spacing;
                } else if (!flowing) {
                    interrupted |= park(Math.min(left, QUIET_NANOS)); // not the head, or not yet time to ask
                }
            }
        } finally {
            QUEUE.remove(me);
            WAITING.decrementAndGet();
            wakeHead(); // the next one may fit too
            if (interrupted) me.interrupt();
        }
    }

    /**
     * Parks; true if the thread's interrupt status was set, which is cleared meanwhile: a set status
     * makes every park return at once, and the wait would spin. The caller sets it again when it
     * is done (as the JDK's {@code Bits.reserveMemory} keeps waiting through an interrupt and sets
     * it again at the end).
     */
    private static boolean park(long nanos) {
        LockSupport.parkNanos(nanos);
        return Thread.interrupted();
    }

    private static long served(long address) {
        if (address > 0) SERVED.incrementAndGet();
        return address;
    }

    /**
     * After a Java buffer's block went back ({@code explicit}: by {@link DirectMemory#free}, not by
     * the GC): the head retries. One volatile read when none waits.
     */
    static void wake(boolean explicit) {
        if (WAITING.get() > 0) {
            FREES.incrementAndGet();
            if (explicit) lastExplicitFree = System.nanoTime();
            wakeHead();
        }
    }

    private static void wakeHead() {
        Thread head = QUEUE.peek();
        if (head != null) LockSupport.unpark(head);
    }

    private static MethodHandle isVirtualHandle() {
        try {
            return MethodHandles.lookup().findVirtual(Thread.class, "isVirtual", MethodType.methodType(boolean.class));
        } catch (ReflectiveOperationException e) {
            return null; // JDK 17-20: no virtual threads
        }
    }
}
