package dev.directmem;

/** Child-JVM helper: allocates, writes, frees; prints where the library came from and the stats. */
public class AllocateOnce {
    public static void main(String[] args) {
        java.nio.ByteBuffer b = DirectMemory.allocate(1 << 20);
        b.put(0, (byte) 1);
        System.out.println("freed " + DirectMemory.free(b) + " with libdirectmem " + Native.version0() + ", jar built for "
                + Native.builtFor() + ": " + DirectMemory.stats());
    }
}
