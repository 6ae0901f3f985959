package dev.directmem;

import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.nio.Buffer;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * Makes the {@link ByteBuffer} over a library block, and reads a buffer's address back.
 *
 * <p>Every way used here gives a buffer with <em>no attachment</em>. The JDK hands each buffer derived
 * from a buffer (slice, duplicate, read-only view, {@code asIntBuffer}, ..., and chains of them) the
 * root's attachment, or the root itself when it has none; so a derived buffer keeps our buffer
 * reachable, and the block is freed only once no derived buffer can reach it (JDK-8208362). A slice
 * of a bigger buffer would not be kept so: its derived buffers would keep only the bigger one.
 *
 * <p>Four ways, best first; the first that works here is used, and {@link #KIND} names it:
 * <ol>
 *   <li>{@code constructor}: the JDK's private {@code DirectByteBuffer(long, int)} constructor (JDK 21+:
 *       {@code (long, long)}), as JNI's NewDirectByteBuffer calls it, where {@code java.nio} is open to
 *       this module ({@code --add-opens java.base/java.nio=ALL-UNNAMED}).</li>
 *   <li>{@code ffm}, JDK 22+: {@code MemorySegment.ofAddress(a).reinterpret(n, Arena.ofShared(), keep)
 *       .asByteBuffer()}, in {@code FfmBuffers} (the jar's release-22 part), or the same calls through
 *       method handles where the jar was built without a JDK 22+ compiler. The buffer's memory session
 *       holds the buffer ({@link KeepsBuffer}): {@code MemorySegment.ofBuffer} keeps only that session,
 *       not the buffer, reachable. That costs a session and three small objects per buffer (on JDK 25,
 *       283 bytes of heap per live 16-byte buffer against 121 for {@code constructor} and {@code jni};
 *       64 B allocate + free 76 ns against 68), hence second. Needs
 *       native access for this module ({@code --enable-native-access=ALL-UNNAMED}), which loading a
 *       JNI library on JDK 24+ takes anyway (on 24+, without the flag, the JVM warns once at load and
 *       then grants it).</li>
 *   <li>{@code unsafe}, JDK 17 to 21 with no flag: the same buffer as {@code constructor}, its fields set
 *       through {@code sun.misc.Unsafe} ({@link UnsafeBuffers}).</li>
 *   <li>{@code jni}: NewDirectByteBuffer, which needs no setting and is slower (a call back into Java).</li>
 * </ol>
 * {@code -Ddirectmem.buffers=ffm|constructor|unsafe|jni} picks where to start; if a way cannot work
 * here, the next is used. Each is checked once at start against what JNI makes, and skipped if it
 * differs.
 */
final class Buffers {
    /** Which way this JVM uses: {@code ffm}, {@code constructor} or {@code jni}. */
    static final String KIND;
    /** (long address, int capacity) ByteBuffer. */
    private static final MethodHandle WRAP;
    /** (ByteBuffer) long: the address of the buffer's first byte (not of its position). */
    private static final MethodHandle ADDRESS;

    /** True when the {@code ffm} way runs as plain calls ({@code FfmBuffers}, the jar's JDK 22 part). */
    static final boolean FFM_PLAIN_CALLS;

    /** The largest capacity {@link #WRAP} takes ({@code asByteBuffer} refuses the last 8 sizes); above it, JNI. */
    private static final int MAX_CAPACITY;

    static {
        String wanted = System.getProperty("directmem.buffers", "constructor");
        String[] order = {"constructor", "ffm", "unsafe", "jni"};
        MethodHandle[] chosen = null;
        String kind = null;
        StringBuilder why = new StringBuilder();
        boolean reached = false;
        for (String candidate : order) {
            reached |= candidate.equals(wanted);
            if (!reached) continue;
            try {
                chosen = handles(candidate);
                probe(chosen);
                kind = candidate;
                break;
            } catch (Throwable t) {
                why.append(candidate).append(": ").append(t).append("; ");
                chosen = null;
            }
        }
        if (chosen == null) {
            throw new IllegalStateException("no way to make a direct buffer over a native block: " + why);
        }
        KIND = kind;
        FFM_PLAIN_CALLS = kind.equals("ffm") && ffmClass() != null; // then handles("ffm") used it
        MAX_CAPACITY = kind.equals("ffm") ? Integer.MAX_VALUE - 8 : Integer.MAX_VALUE;
        WRAP = chosen[0];
        ADDRESS = chosen[1];
    }

    private Buffers() {}

    /** A big-endian buffer over {@code capacity} bytes at {@code address}, position 0, limit = capacity. */
    static ByteBuffer wrap(long address, int capacity) {
        if (capacity > MAX_CAPACITY) {
            return Native.wrap0(address, capacity); // the FFM way stops 8 bytes short of Integer.MAX_VALUE
        }
        try {
            return (ByteBuffer) WRAP.invokeExact(address, capacity);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    /** The address of a direct buffer's first byte (0 if it has none). */
    static long address(ByteBuffer buffer) {
        try {
            return (long) ADDRESS.invokeExact(buffer);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    private static MethodHandle[] handles(String kind) throws Exception {
        MethodHandles.Lookup lookup = MethodHandles.lookup();
        MethodType wrapType = MethodType.methodType(ByteBuffer.class, long.class, int.class);
        MethodType addressType = MethodType.methodType(long.class, ByteBuffer.class);
        switch (kind) {
            case "ffm": {
                if (Runtime.version().feature() < 22) throw new UnsupportedOperationException("JDK 22+ only");
                Object module = Buffers.class.getModule();
                if (!(boolean) Module.class.getMethod("isNativeAccessEnabled").invoke(module)) {
                    throw new UnsupportedOperationException("native access is not enabled for " + module
                            + " (--enable-native-access=ALL-UNNAMED, or the module's name)");
                }
                Class<?> plain = ffmClass(); // the jar's JDK 22 part: plain calls, no classes spun
                if (plain != null) {
                    return new MethodHandle[] {lookup.findStatic(plain, "wrap", wrapType), lookup.findStatic(plain, "address", addressType)};
                }
                // Built without a JDK 22+ compiler: the same calls, through method handles.
                return new MethodHandle[] {lookup.findStatic(FfmByHandles.class, "wrap", wrapType),
                    lookup.findStatic(FfmByHandles.class, "address", addressType)};
            }
            case "constructor": {
                if (!ByteBuffer.class.getModule().isOpen("java.nio", Buffers.class.getModule())) {
                    throw new UnsupportedOperationException("java.nio is not open to " + Buffers.class.getModule()
                            + " (--add-opens java.base/java.nio=ALL-UNNAMED)");
                }
                Class<?> direct = Class.forName("java.nio.DirectByteBuffer");
                MethodHandles.Lookup nio = MethodHandles.privateLookupIn(direct, lookup);
                MethodHandle constructor;
                try {
                    constructor = nio.findConstructor(direct, MethodType.methodType(void.class, long.class, int.class));
                } catch (NoSuchMethodException e) { // JDK 21+
                    constructor = nio.findConstructor(direct, MethodType.methodType(void.class, long.class, long.class));
                }
                MethodHandle address = MethodHandles.privateLookupIn(Buffer.class, lookup).findGetter(Buffer.class, "address", long.class);
                return new MethodHandle[] {MethodHandles.explicitCastArguments(constructor, wrapType), address.asType(addressType)};
            }
            case "unsafe":
                if (Runtime.version().feature() >= 22) throw new UnsupportedOperationException("JDK 17 to 21 only (ffm from 22)");
                return new MethodHandle[] {
                    lookup.findStatic(UnsafeBuffers.class, "wrap", wrapType), lookup.findStatic(UnsafeBuffers.class, "address", addressType)
                };
            case "jni":
                return new MethodHandle[] {
                    lookup.findStatic(Native.class, "wrap0", wrapType), lookup.findStatic(Native.class, "address0", addressType)
                };
            default:
                throw new IllegalArgumentException("directmem.buffers must be ffm, constructor, unsafe or jni: " + kind);
        }
    }

    /** {@code FfmBuffers}, or null where the jar has no JDK 22 part (or this JDK is older). */
    private static Class<?> ffmClass() {
        try {
            return Class.forName("dev.directmem.FfmBuffers");
        } catch (ClassNotFoundException | LinkageError e) {
            return null;
        }
    }

    /**
     * {@code FfmBuffers}'s calls through method handles, for a jar built without a JDK 22+ compiler (this
     * code compiles for release 17); loaded only when the {@code ffm} way is tried on JDK 22+.
     */
    private static final class FfmByHandles {
        private static final MethodHandle OF_ADDRESS, REINTERPRET, OF_SHARED, AS_BYTE_BUFFER, OF_BUFFER, SEGMENT_ADDRESS;

        static {
            try {
                MethodHandles.Lookup lookup = MethodHandles.lookup();
                Class<?> segment = Class.forName("java.lang.foreign.MemorySegment");
                Class<?> arena = Class.forName("java.lang.foreign.Arena");
                OF_ADDRESS = lookup.findStatic(segment, "ofAddress", MethodType.methodType(segment, long.class))
                        .asType(MethodType.methodType(Object.class, long.class));
                REINTERPRET = lookup.findVirtual(segment, "reinterpret",
                                MethodType.methodType(segment, long.class, arena, java.util.function.Consumer.class))
                        .asType(MethodType.methodType(Object.class, Object.class, long.class, Object.class, KeepsBuffer.class));
                OF_SHARED = lookup.findStatic(arena, "ofShared", MethodType.methodType(arena))
                        .asType(MethodType.methodType(Object.class));
                AS_BYTE_BUFFER = lookup.findVirtual(segment, "asByteBuffer", MethodType.methodType(ByteBuffer.class))
                        .asType(MethodType.methodType(ByteBuffer.class, Object.class));
                OF_BUFFER = lookup.findStatic(segment, "ofBuffer", MethodType.methodType(segment, Buffer.class))
                        .asType(MethodType.methodType(Object.class, ByteBuffer.class));
                SEGMENT_ADDRESS = lookup.findVirtual(segment, "address", MethodType.methodType(long.class))
                        .asType(MethodType.methodType(long.class, Object.class));
            } catch (ReflectiveOperationException e) {
                throw new ExceptionInInitializerError(e);
            }
        }

        @SuppressWarnings("unused") // through a method handle
        static ByteBuffer wrap(long address, int capacity) throws Throwable {
            KeepsBuffer keep = new KeepsBuffer();
            Object segment = (Object) OF_ADDRESS.invokeExact(address);
            Object own = (Object) REINTERPRET.invokeExact(segment, (long) capacity, (Object) OF_SHARED.invokeExact(), keep);
            ByteBuffer buffer = (ByteBuffer) AS_BYTE_BUFFER.invokeExact(own);
            keep.buffer = buffer;
            return buffer;
        }

        /** As {@code FfmBuffers.address}: {@code ofBuffer}'s segment starts at the position. */
        @SuppressWarnings("unused") // through a method handle
        static long address(ByteBuffer buffer) throws Throwable {
            return (long) SEGMENT_ADDRESS.invokeExact((Object) OF_BUFFER.invokeExact(buffer)) - buffer.position();
        }
    }

    /**
     * Checks a way: the buffer it makes is right, or it is not used. Nothing is read or written through
     * the buffer, so any address will do (a real block could not be had when the limit is full).
     */
    private static void probe(MethodHandle[] handles) throws Throwable {
        long address = 1L << 20;
        ByteBuffer buffer = (ByteBuffer) handles[0].invokeExact(address, 16);
        buffer.position(3);
        boolean markUnset;
        try {
            buffer.duplicate().reset();
            markUnset = false;
        } catch (java.nio.InvalidMarkException expected) {
            markUnset = true;
        }
        if (!markUnset || buffer.position() != 3 || !buffer.isDirect() || buffer.capacity() != 16 || buffer.limit() != 16 || buffer.order() != ByteOrder.BIG_ENDIAN
                || buffer.isReadOnly() || Native.address0(buffer) != address
                || (long) handles[1].invokeExact(buffer) != address) {
            throw new IllegalStateException("the buffer made does not match its address and capacity: " + buffer);
        }
    }
}
