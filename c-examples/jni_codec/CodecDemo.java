import dev.directmem.DirectMemory;
import dev.directmem.DirectMemoryStats;
import java.nio.ByteBuffer;

/**
 * One limit for Java and native code: the toy codec (codec.c, a JNI library that links
 * -ldirectmem) allocates its output from directmem while this program's ByteBuffers come from
 * DirectMemory. The codec's output does not fit until the GC frees buffers this program dropped:
 * directmem's reclaim hook asks for that GC, and the C allocation succeeds with no error.
 */
public class CodecDemo {
    static native long encode(ByteBuffer source, int length);
    static native long encodedLength(long handle);
    static native void release(long handle);
    static native long[] nativeStats();

    public static void main(String[] args) {
        DirectMemory.setLimit(32L << 20); // loads libdirectmem first: the codec then finds it by its soname
        System.loadLibrary("codec");

        for (int i = 0; i < 20; i++) DirectMemory.allocate(1 << 20).put(0, (byte) i); // 20 MiB dropped
        ByteBuffer input = DirectMemory.allocate(4 << 20); // 4 MiB of runs of 100 equal bytes
        for (int i = 0; i < input.capacity(); i++) input.put(i, (byte) (i / 100));

        long[] before = nativeStats();
        DirectMemoryStats java = DirectMemory.stats();
        System.out.printf("before: C sees %d blocks, %d bytes reserved; Java sees %d buffers, %d bytes%n",
                before[0], before[1], java.count(), java.reserved());
        if (before[0] != java.count() || before[1] != java.reserved()) throw new AssertionError("two quotas?");

        long out = encode(input, input.capacity()); // 8 MiB + 8 does not fit next to 24 MiB held
        long[] after = nativeStats();
        System.out.printf("encoded 4 MiB into %d bytes; the C allocation needed %d reclaim round(s), then fit%n",
                encodedLength(out), after[2] - before[2]);
        if (encodedLength(out) != 2L * ((4 << 20) / 100 + 1)) throw new AssertionError("codec output");
        if (after[2] <= before[2]) throw new AssertionError("the C allocation should have needed a reclaim round");
        release(out);
        DirectMemory.free(input);
        System.out.println("codec: OK");
    }
}
