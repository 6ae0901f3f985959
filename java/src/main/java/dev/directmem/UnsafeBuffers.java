package dev.directmem;

import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.lang.reflect.Field;
import java.nio.Buffer;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * The {@code unsafe} way of {@link Buffers}, for JDK 17 to 21 with no flag: a
 * {@code DirectByteBuffer} allocated without its constructor ({@code sun.misc.Unsafe.allocateInstance},
 * which {@code jdk.unsupported} exports to everyone) and given its address, capacity, limit, mark and
 * byte order field by field, as JNI's NewDirectByteBuffer constructor would; every other field keeps
 * its default (no attachment, no cleaner, position 0, not read-only). LWJGL makes its buffers so.
 * {@link Buffers} checks the result against JNI before it uses this way. Not used from JDK 22, where
 * {@code ffm} needs no Unsafe (whose memory-access methods warn from JDK 24).
 */
final class UnsafeBuffers {
    private static final Class<?> DIRECT;
    private static final MethodHandle ALLOCATE_INSTANCE; // (Class) Object
    private static final MethodHandle PUT_LONG; // (Object, long, long) void
    private static final MethodHandle PUT_INT; // (Object, long, int) void
    private static final MethodHandle PUT_BOOLEAN; // (Object, long, boolean) void
    private static final MethodHandle GET_LONG; // (Object, long) long
    private static final long ADDRESS, CAPACITY, LIMIT, MARK, BIG_ENDIAN, NATIVE_BYTE_ORDER;

    static {
        try {
            Class<?> unsafeClass = Class.forName("sun.misc.Unsafe");
            Field theUnsafe = unsafeClass.getDeclaredField("theUnsafe");
            theUnsafe.setAccessible(true);
            Object unsafe = theUnsafe.get(null);
            MethodHandles.Lookup lookup = MethodHandles.lookup();
            MethodHandle offset = lookup.findVirtual(unsafeClass, "objectFieldOffset", MethodType.methodType(long.class, Field.class)).bindTo(unsafe);
            ALLOCATE_INSTANCE = lookup.findVirtual(unsafeClass, "allocateInstance", MethodType.methodType(Object.class, Class.class)).bindTo(unsafe);
            PUT_LONG = lookup.findVirtual(unsafeClass, "putLong", MethodType.methodType(void.class, Object.class, long.class, long.class)).bindTo(unsafe);
            PUT_INT = lookup.findVirtual(unsafeClass, "putInt", MethodType.methodType(void.class, Object.class, long.class, int.class)).bindTo(unsafe);
            PUT_BOOLEAN = lookup.findVirtual(unsafeClass, "putBoolean", MethodType.methodType(void.class, Object.class, long.class, boolean.class)).bindTo(unsafe);
            GET_LONG = lookup.findVirtual(unsafeClass, "getLong", MethodType.methodType(long.class, Object.class, long.class)).bindTo(unsafe);
            DIRECT = Class.forName("java.nio.DirectByteBuffer");
            ADDRESS = (long) offset.invokeExact(Buffer.class.getDeclaredField("address"));
            CAPACITY = (long) offset.invokeExact(Buffer.class.getDeclaredField("capacity"));
            LIMIT = (long) offset.invokeExact(Buffer.class.getDeclaredField("limit"));
            MARK = (long) offset.invokeExact(Buffer.class.getDeclaredField("mark"));
            BIG_ENDIAN = (long) offset.invokeExact(ByteBuffer.class.getDeclaredField("bigEndian"));
            NATIVE_BYTE_ORDER = (long) offset.invokeExact(ByteBuffer.class.getDeclaredField("nativeByteOrder"));
        } catch (Throwable t) {
            throw new ExceptionInInitializerError(t);
        }
    }

    private UnsafeBuffers() {}

    static ByteBuffer wrap(long address, int capacity) throws Throwable {
        Object buffer = (Object) ALLOCATE_INSTANCE.invokeExact(DIRECT);
        PUT_LONG.invokeExact(buffer, ADDRESS, address);
        PUT_INT.invokeExact(buffer, CAPACITY, capacity);
        PUT_INT.invokeExact(buffer, LIMIT, capacity);
        PUT_INT.invokeExact(buffer, MARK, -1);
        PUT_BOOLEAN.invokeExact(buffer, BIG_ENDIAN, true);
        PUT_BOOLEAN.invokeExact(buffer, NATIVE_BYTE_ORDER, ByteOrder.nativeOrder() == ByteOrder.BIG_ENDIAN);
        return (ByteBuffer) buffer;
    }

    static long address(ByteBuffer buffer) throws Throwable {
        return (long) GET_LONG.invokeExact((Object) buffer, ADDRESS);
    }
}
