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
 *       once it has seen no free for {@link #QUIET_NANOS}; one round at a time;</li>
 *   <li>refused only at the deadline ({@code directmem.reclaimTimeoutMs} after the first refusal),
 *       after a last try that takes memory if it fits, head or not.</li>
 * </ul>
 */
final class VirtualWait {
    private static final MethodHandle IS_VIRTUAL = isVirtualHandle();
    private static final ConcurrentLinkedQueue<Thread> QUEUE = new ConcurrentLinkedQueue<>();
    private static final AtomicInteger WAITING = new AtomicInteger();
    /** Java frees seen while virtual threads waited: tells the head whether memory flows. */
    private static final AtomicLong FREES = new AtomicLong();
    private static final AtomicBoolean ROUND = new AtomicBoolean();
    /** How long the head waits for a free before it asks for a round, while explicit frees flow. */
    private static final long QUIET_NANOS = TimeUnit.MILLISECONDS.toNanos(3);
    /** Explicit frees this recent mean memory flows back without a GC. */
    private static final long FLOWING_NANOS = TimeUnit.MILLISECONDS.toNanos(20);
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
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(DirectMemory.RECLAIM_TIMEOUT_MS);
        Thread me = Thread.currentThread();
        WAITING.incrementAndGet();
        QUEUE.add(me);
        try {
            while (true) {
                long seen = FREES.get();
                if (QUEUE.peek() == me) {
                    long address = Native.allocate0(capacity, alignment, false);
                    if (address != -Native.LIMIT) return address;
                }
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    return Native.allocate0(capacity, alignment, false); // the limit must really be in the way
                }
                // Explicit frees lately: memory flows back by itself, so wait for it quietly first.
                boolean flowing = System.nanoTime() - lastExplicitFree < FLOWING_NANOS;
                if (flowing) LockSupport.parkNanos(Math.min(left, QUIET_NANOS));
                if (QUEUE.peek() == me && FREES.get() == seen && ROUND.compareAndSet(false, true)) {
                    try { // memory stopped flowing: only the GC can find more
                        Reclaimer.reclaim(capacity);
                    } finally {
                        ROUND.set(false);
                    }
                } else if (!flowing) {
                    LockSupport.parkNanos(Math.min(left, QUIET_NANOS)); // not the head, or a round is in flight
                }
            }
        } finally {
            QUEUE.remove(me);
            WAITING.decrementAndGet();
            wakeHead(); // the next one may fit too
        }
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
