package dev.directmem;

import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Child-JVM helper: allocates and frees a buffer, then prints each libdirectmem file this process has
 * mapped, one line each ("mapped <file>"), and the stats.
 */
public class OneLibrary {
    public static void main(String[] args) throws Exception {
        java.nio.ByteBuffer b = DirectMemory.allocate(1 << 20);
        System.out.println("freed " + DirectMemory.free(b) + ": " + DirectMemory.stats());
        Files.readAllLines(Path.of("/proc/self/maps")).stream()
                .map(line -> line.trim().split("\\s+", 6))
                .filter(f -> f.length == 6 && f[5].substring(f[5].lastIndexOf('/') + 1).startsWith("libdirectmem"))
                .map(f -> f[5]).distinct().forEach(file -> System.out.println("mapped " + file));
    }
}
