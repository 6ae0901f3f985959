package dev.directmem;

import java.lang.management.BufferPoolMXBean;
import java.lang.management.ManagementFactory;
import javax.management.InstanceAlreadyExistsException;
import javax.management.ObjectName;

/** The {@code java.nio:type=BufferPool,name=directmem} MBean, listed by JMX tools beside {@code direct} and {@code mapped}. */
final class DirectMemoryPool implements BufferPoolMXBean {
    static final String OBJECT_NAME = "java.nio:type=BufferPool,name=directmem";

    static void register() {
        try {
            ManagementFactory.getPlatformMBeanServer().registerMBean(new DirectMemoryPool(), new ObjectName(OBJECT_NAME));
        } catch (InstanceAlreadyExistsException e) {
            // registered by another class loader's copy of this library: theirs shows the same counters
        } catch (Exception | LinkageError e) {
            System.getLogger("dev.directmem").log(System.Logger.Level.WARNING, "cannot register " + OBJECT_NAME, e);
        }
    }

    @Override public String getName() { return "directmem"; }
    @Override public long getCount() { return DirectMemory.stats().count(); }
    @Override public long getTotalCapacity() { return DirectMemory.stats().capacity(); }
    @Override public long getMemoryUsed() { return DirectMemory.stats().reserved(); }

    @Override
    public ObjectName getObjectName() {
        try {
            return new ObjectName(OBJECT_NAME);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }
}
