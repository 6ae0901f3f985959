import dev.directmem.DirectMemory;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

/**
 * The keep loop: 20 MiB buffers kept in a list under a 100 MiB limit. The 6th allocation cannot fit;
 * directmem asks for a GC, waits for returned memory, then throws the JDK-style OutOfMemoryError.
 */
public class KeepLoop {
    public static void main(String[] args) {
        DirectMemory.setLimit(100L << 20);
        List<ByteBuffer> kept = new ArrayList<>();
        long start = 0;
        try {
            while (true) {
                start = System.nanoTime();
                kept.add(DirectMemory.allocate(20 << 20));
                System.out.printf("kept %d buffers, reserved %d MiB%n", kept.size(), DirectMemory.stats().reserved() >> 20);
            }
        } catch (OutOfMemoryError e) {
            System.out.printf("allocation %d failed after %.0f ms: %s%n", kept.size() + 1, (System.nanoTime() - start) / 1e6, e.getMessage());
        }
        kept.forEach(DirectMemory::free);
        System.out.println("freed them all: " + DirectMemory.stats());
    }
}
