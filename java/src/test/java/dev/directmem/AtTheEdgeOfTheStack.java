package dev.directmem;

import java.nio.ByteBuffer;

/**
 * A child-JVM main: recurses until the stack overflows, then lets the lowest frames on the way back
 * allocate a buffer each (some of them fail with {@code StackOverflowError} part-way through) or free one
 * explicitly; drops everything, and prints the library's count once the GC and the cleaner thread had
 * their turn. Every block must come back: a block whose buffer could not be made or tracked, or that
 * {@link DirectMemory#free} took out of {@link LiveBlocks}, must not stay reserved for good.
 */
public final class AtTheEdgeOfTheStack {
    static int attempts, made, failed, next;
    static ByteBuffer[] toFree;

    static void dive(int size) {
        try {
            dive(size);
        } catch (StackOverflowError bottom) {
            // the frames above try, each with a little more stack than the one below
        }
        if (attempts-- > 0) {
            try {
                if (toFree == null) {
                    DirectMemory.allocate(size).put(0, (byte) 1);
                } else if (next < toFree.length) {
                    DirectMemory.free(toFree[next++]);
                }
                made++;
            } catch (StackOverflowError e) {
                failed++;
            }
        }
    }

    public static void main(String[] args) throws Exception {
        // Classes loaded and call sites resolved with stack to spare.
        DirectMemory.free(DirectMemory.allocate(16));
        DirectMemory.free(DirectMemory.allocate(1 << 20));
        int rounds = Integer.parseInt(args[0]);
        for (int size : new int[] {16, 64, 4096, 100_000, 1 << 20}) {
            for (int i = 0; i < rounds; i++) {
                attempts = 60;
                dive(size);
                toFree = new ByteBuffer[60];
                for (int k = 0; k < toFree.length; k++) toFree[k] = DirectMemory.allocate(size);
                next = 0;
                attempts = 60;
                dive(size);
                toFree = null;
            }
        }
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (DirectMemory.stats().count() != 0 && System.nanoTime() < deadline) {
            System.gc();
            Thread.sleep(100);
        }
        System.out.println(made + " steps done, " + failed + " failed with StackOverflowError; count "
                + DirectMemory.stats().count() + ", reserved " + DirectMemory.stats().reserved());
    }
}
