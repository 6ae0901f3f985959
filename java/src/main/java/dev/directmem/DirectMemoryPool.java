package dev.directmem;

import java.lang.management.BufferPoolMXBean;
import java.lang.management.ManagementFactory;
import javax.management.InstanceAlreadyExistsException;
import javax.management.MBeanServerFactory;
import javax.management.ObjectName;

/** The {@code java.nio:type=BufferPool,name=directmem} MBean, listed by JMX tools beside {@code direct} and {@code mapped}. */
final class DirectMemoryPool implements BufferPoolMXBean {
    static final String OBJECT_NAME = "java.nio:type=BufferPool,name=directmem";

    private static volatile boolean registered;

    /**
     * Registers the MBean as {@code directmem.jmx} says: {@code true} always, {@code false} never,
     * {@code auto} (the default) only where JMX is in use already: the platform MBean server exists or
     * a JMX agent is configured. Creating the server ourselves loads JMX, whose objects every full GC
     * must then mark: measured, that doubled the GC pauses of a bare JVM and cut the 8-thread reclaim
     * rate of the benchmark by 45%.
     */
    static void registerIfWanted() {
        String mode = System.getProperty("directmem.jmx", "auto");
        if (registered || "false".equalsIgnoreCase(mode)) {
            return;
        }
        if ("true".equalsIgnoreCase(mode) || jmxInUse()) {
            register();
        }
    }

    private static boolean jmxInUse() {
        // ManagementFactory creates the platform server through MBeanServerFactory, which lists it.
        return !MBeanServerFactory.findMBeanServer(null).isEmpty()
                || System.getProperties().stringPropertyNames().stream().anyMatch(k -> k.startsWith("com.sun.management.jmxremote"));
    }

    static void register() {
        registered = true;
        try {
            ManagementFactory.getPlatformMBeanServer().registerMBean(new DirectMemoryPool(), new ObjectName(OBJECT_NAME));
        } catch (InstanceAlreadyExistsException e) {
            // registered by another class loader's copy of this library: theirs shows the same counters
        } catch (Exception | LinkageError e) {
            Log.log(System.Logger.Level.WARNING, "cannot register " + OBJECT_NAME, e);
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
