package dev.directmem;

/** Child-JVM helper: a native thread hits the limit (so the hook attaches it), then lives on for 10 minutes. */
public class NativeThreadLingers {
    public static void main(String[] args) {
        DirectMemory.setLimit(8L << 20);
        DirectMemory.allocate(8 << 20).put(0, (byte) 1); // dropped: the native thread needs a GC
        System.out.println("native thread status " + Native.allocateOnNativeThread0(4L << 20, 4, 600_000));
    }
}
