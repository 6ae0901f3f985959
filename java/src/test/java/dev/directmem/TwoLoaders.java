package dev.directmem;

import java.net.URL;
import java.net.URLClassLoader;
import java.nio.ByteBuffer;
import java.nio.file.Path;

/**
 * Child-JVM helper: two class loaders, each with its own copy of directmem's classes from the jar
 * (args[0]), as two applications in one server. The first allocates and frees; the second must be
 * refused with the reason said, and the first must still work after it. Prints one line per step.
 */
public class TwoLoaders {
    public static void main(String[] args) throws Exception {
        URL jar = Path.of(args[0]).toUri().toURL();
        ClassLoader first = new URLClassLoader(new URL[] {jar}, ClassLoader.getPlatformClassLoader());
        ClassLoader second = new URLClassLoader(new URL[] {jar}, ClassLoader.getPlatformClassLoader());
        System.out.println("first: " + allocateAndFree(first));
        System.out.println("second: " + allocateAndFree(second));
        System.out.println("first again: " + allocateAndFree(first));
    }

    private static String allocateAndFree(ClassLoader loader) {
        try {
            Class<?> api = Class.forName("dev.directmem.DirectMemory", true, loader);
            Object buffer = api.getMethod("allocate", int.class).invoke(null, 4096);
            return "freed " + api.getMethod("free", ByteBuffer.class).invoke(null, buffer);
        } catch (Throwable t) {
            while (t.getCause() != null && !(t instanceof UnsatisfiedLinkError)) t = t.getCause();
            return t instanceof UnsatisfiedLinkError ? "UnsatisfiedLinkError: " + t.getMessage() : t.toString();
        }
    }
}
