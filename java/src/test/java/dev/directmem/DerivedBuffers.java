package dev.directmem;

import java.nio.Buffer;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.CharBuffer;
import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.LongBuffer;
import java.nio.ShortBuffer;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;

/**
 * The use-after-free of issue 12 as a check: for every kind of buffer derived from a
 * {@link DirectMemory#allocate}d buffer (and chains of them, and on JDK 22+ buffers of a
 * {@code MemorySegment} made from it), at sizes below and above 64 KiB, only
 * the derived buffer is kept; after GCs, new buffers of the same size are written all over; the
 * derived buffer must still read its own data. Also a child-JVM main: prints the way buffers are
 * made here and the number of derived buffers that lost their data.
 */
public final class DerivedBuffers {
    static final int[] SIZES = {16, 64, 4096, 16384, 65536, 65537, 1 << 20};
    static final byte MINE = 0x11, OTHERS = 0x7f;

    /** Kinds of derived buffer, by name; each keeps its whole source in view. */
    static Map<String, Function<ByteBuffer, Buffer>> kinds() {
        Map<String, Function<ByteBuffer, Buffer>> k = new LinkedHashMap<>();
        k.put("slice", ByteBuffer::slice);
        k.put("slice(0,n)", b -> b.slice(0, b.capacity()));
        k.put("duplicate", ByteBuffer::duplicate);
        k.put("asReadOnlyBuffer", ByteBuffer::asReadOnlyBuffer);
        k.put("order(LE).slice", b -> b.order(ByteOrder.LITTLE_ENDIAN).slice());
        k.put("asCharBuffer", ByteBuffer::asCharBuffer);
        k.put("asShortBuffer", ByteBuffer::asShortBuffer);
        k.put("asIntBuffer", ByteBuffer::asIntBuffer);
        k.put("asLongBuffer", ByteBuffer::asLongBuffer);
        k.put("asFloatBuffer", ByteBuffer::asFloatBuffer);
        k.put("asDoubleBuffer", ByteBuffer::asDoubleBuffer);
        k.put("slice.duplicate.asIntBuffer", b -> b.slice().duplicate().asIntBuffer());
        k.put("duplicate.slice.asReadOnlyBuffer.slice", b -> b.duplicate().slice().asReadOnlyBuffer().slice());
        k.put("asLongBuffer.slice.duplicate", b -> b.asLongBuffer().slice().duplicate());
        if (Runtime.version().feature() >= 22) { // the FFM API, final in JDK 22; the tests compile for 17
            k.put("MemorySegment.ofBuffer.asByteBuffer", b -> throughSegment(b, false));
            k.put("MemorySegment.ofBuffer.asSlice.asByteBuffer", b -> throughSegment(b, true));
            k.put("asLongBuffer.MemorySegment.ofBuffer.asByteBuffer", b -> throughSegment(b.asLongBuffer(), false));
        }
        return k;
    }

    /**
     * {@code MemorySegment.ofBuffer(b)} (and its {@code asSlice(0)}) as a {@code ByteBuffer} again: the
     * segment must keep {@code b}'s block alive as a slice does, whichever way {@code b} was made.
     * {@code ofBuffer} keeps the memory session of the segment {@code b} was made from, if any, else
     * {@code b} (or its attachment).
     */
    static Buffer throughSegment(Buffer b, boolean slice) {
        try {
            Class<?> segment = Class.forName("java.lang.foreign.MemorySegment");
            Object s = segment.getMethod("ofBuffer", Buffer.class).invoke(null, b);
            if (slice) s = segment.getMethod("asSlice", long.class).invoke(s, 0L);
            return (Buffer) segment.getMethod("asByteBuffer").invoke(s);
        } catch (ReflectiveOperationException e) {
            throw new AssertionError("MemorySegment on JDK " + Runtime.version(), e);
        }
    }

    /** Only the derived buffer survives this call. */
    static Buffer derivedOfDroppedRoot(int size, Function<ByteBuffer, Buffer> kind) {
        ByteBuffer root = DirectMemory.allocate(size);
        for (int i = 0; i < size; i++) root.put(i, MINE);
        return kind.apply(root);
    }

    /** Elements of {@code b} whose bytes are not all {@link #MINE}. */
    static int lost(Buffer b) {
        int bad = 0;
        for (int i = 0; i < b.capacity(); i++) {
            boolean ok;
            if (b instanceof ByteBuffer) ok = ((ByteBuffer) b).get(i) == MINE;
            else if (b instanceof CharBuffer) ok = ((CharBuffer) b).get(i) == 0x1111;
            else if (b instanceof ShortBuffer) ok = ((ShortBuffer) b).get(i) == 0x1111;
            else if (b instanceof IntBuffer) ok = ((IntBuffer) b).get(i) == 0x11111111;
            else if (b instanceof LongBuffer) ok = ((LongBuffer) b).get(i) == 0x1111111111111111L;
            else if (b instanceof FloatBuffer) ok = Float.floatToRawIntBits(((FloatBuffer) b).get(i)) == 0x11111111;
            else ok = Double.doubleToRawLongBits(((DoubleBuffer) b).get(i)) == 0x1111111111111111L;
            if (!ok) bad++;
        }
        return bad;
    }

    /** Runs every kind at every size; returns a description of each one that lost data. */
    static List<String> check() throws InterruptedException {
        List<String> failures = new ArrayList<>();
        for (int size : SIZES) {
            Map<String, Buffer> derived = new LinkedHashMap<>();
            kinds().forEach((name, kind) -> derived.put(name, derivedOfDroppedRoot(size, kind)));
            for (int r = 0; r < 3; r++) {
                System.gc();
                Thread.sleep(30);
            }
            List<ByteBuffer> others = new ArrayList<>(); // take whatever was freed, and write over it
            for (int i = 0; i < 2 * derived.size(); i++) {
                ByteBuffer o = DirectMemory.allocate(size);
                for (int j = 0; j < size; j++) o.put(j, OTHERS);
                others.add(o);
            }
            derived.forEach((name, b) -> {
                int bad = lost(b);
                if (bad > 0) failures.add(name + " of " + size + " B: " + bad + " of " + b.capacity() + " elements overwritten");
            });
            for (ByteBuffer o : others) DirectMemory.free(o);
        }
        return failures;
    }

    public static void main(String[] args) throws Exception {
        List<String> failures = check();
        System.out.println("buffers made by " + Buffers.KIND + (Buffers.FFM_PLAIN_CALLS ? " (plain calls)" : ""));
        failures.forEach(System.out::println);
        System.out.println(failures.size() + " derived buffers lost their data");
    }
}
