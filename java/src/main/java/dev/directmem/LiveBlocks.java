package dev.directmem;

import java.nio.ByteBuffer;

/**
 * The blocks of live Java buffers, by address: how {@link DirectMemory#free} finds a buffer's block
 * (then tells the buffer from its slices and duplicates, which share the address, by the block's
 * phantom reference), and what keeps each {@link Block} reachable until its release.
 *
 * <p>A chained hash table in 64 stripes, each under its own monitor, held only for a few loads and
 * stores (never across a call into the library), so the {@link CleanerThread} never waits on an
 * allocation for long. Addresses of live blocks are distinct, so an address finds at most one.
 */
final class LiveBlocks {
    private static final int STRIPE_BITS = 6;
    private static final Stripe[] STRIPES = new Stripe[1 << STRIPE_BITS];

    static {
        for (int i = 0; i < STRIPES.length; i++) STRIPES[i] = new Stripe();
    }

    private LiveBlocks() {}

    private static final class Stripe {
        Block[] buckets = new Block[64];
        int size;
    }

    /** Fibonacci hashing: blocks sit 16 bytes to megabytes apart, so spread every bit of the address. */
    private static long hash(long address) {
        return address * 0x9E3779B97F4A7C15L;
    }

    private static Stripe stripe(long hash) {
        return STRIPES[(int) (hash >>> (64 - STRIPE_BITS))];
    }

    private static int bucket(long hash, int length) {
        return (int) (hash >>> 20) & (length - 1);
    }

    /** The monitor that guards {@code address}'s bucket (tests hold it to keep the cleaner thread waiting). */
    static Object monitorOf(long address) {
        return stripe(hash(address));
    }

    static void add(Block block) {
        long h = hash(block.address);
        Stripe s = stripe(h);
        synchronized (s) {
            if (s.size >= s.buckets.length) grow(s);
            int i = bucket(h, s.buckets.length);
            block.next = s.buckets[i];
            s.buckets[i] = block;
            s.size++;
        }
    }

    /**
     * Takes out the block of {@code buffer} itself (not of a slice or duplicate of it, which share its
     * address) and returns it, or null if it has none here: one look under the stripe's monitor, for
     * {@link DirectMemory#free}. The buffer's limit becomes 0 under that monitor, so a racing free of
     * the same buffer, which finds no block once it gets the monitor, also sees it freed.
     */
    static Block takeOf(ByteBuffer buffer, long address) {
        long h = hash(address);
        Stripe s = stripe(h);
        synchronized (s) {
            int i = bucket(h, s.buckets.length);
            Block previous = null;
            for (Block b = s.buckets[i]; b != null; previous = b, b = b.next) {
                if (b.address == address) {
                    if (!b.refersTo(buffer)) return null;
                    buffer.limit(0);
                    unlink(s, i, previous, b);
                    return b;
                }
            }
        }
        return null;
    }

    /** Takes {@code block} out; true for exactly one caller. */
    static boolean remove(Block block) {
        long h = hash(block.address);
        Stripe s = stripe(h);
        synchronized (s) {
            int i = bucket(h, s.buckets.length);
            Block previous = null;
            for (Block b = s.buckets[i]; b != null; previous = b, b = b.next) {
                if (b == block) {
                    unlink(s, i, previous, b);
                    return true;
                }
            }
        }
        return false;
    }

    private static void unlink(Stripe s, int bucket, Block previous, Block b) {
        if (previous == null) s.buckets[bucket] = b.next;
        else previous.next = b.next;
        b.next = null;
        s.size--;
    }

    /** Live Java buffers (for tests). */
    static int size() {
        int size = 0;
        for (Stripe s : STRIPES) {
            synchronized (s) {
                size += s.size;
            }
        }
        return size;
    }

    private static void grow(Stripe s) {
        Block[] old = s.buckets;
        Block[] buckets = new Block[old.length * 2];
        for (Block head : old) {
            for (Block b = head; b != null; ) {
                Block next = b.next;
                int i = bucket(hash(b.address), buckets.length);
                b.next = buckets[i];
                buckets[i] = b;
                b = next;
            }
        }
        s.buckets = buckets;
    }
}
