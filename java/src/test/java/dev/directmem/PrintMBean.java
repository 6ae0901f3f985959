package dev.directmem;

import java.lang.management.ManagementFactory;
import javax.management.ObjectName;

/**
 * Child-JVM helper: loads the library (after starting JMX when given "jmx-first"), then prints whether
 * the directmem buffer pool MBean is registered.
 */
public class PrintMBean {
    public static void main(String[] args) throws Exception {
        if (args.length > 0 && args[0].equals("jmx-first")) ManagementFactory.getPlatformMBeanServer();
        DirectMemory.free(DirectMemory.allocate(10));
        System.out.println(ManagementFactory.getPlatformMBeanServer().isRegistered(new ObjectName(DirectMemoryPool.OBJECT_NAME)));
    }
}
