package dev.directmem;

import java.lang.management.ManagementFactory;
import javax.management.ObjectName;

/**
 * Child-JVM helper: loads the library (after starting JMX when given "jmx-first"), then prints whether
 * the directmem buffer pool MBean is registered. With "jmx-late", JMX starts after the library, and
 * it prints whether the MBean appeared within 3 s, and after how long.
 */
public class PrintMBean {
    public static void main(String[] args) throws Exception {
        if (args.length > 0 && args[0].equals("jmx-first")) ManagementFactory.getPlatformMBeanServer();
        DirectMemory.free(DirectMemory.allocate(10));
        if (args.length > 0 && args[0].equals("jmx-late")) {
            var server = ManagementFactory.getPlatformMBeanServer();
            long start = System.nanoTime();
            while (!server.isRegistered(new ObjectName(DirectMemoryPool.OBJECT_NAME)) && System.nanoTime() - start < 3_000_000_000L) {
                Thread.sleep(10);
            }
            System.out.println(server.isRegistered(new ObjectName(DirectMemoryPool.OBJECT_NAME)) + " after "
                    + (System.nanoTime() - start) / 1_000_000 + " ms");
            return;
        }
        System.out.println(ManagementFactory.getPlatformMBeanServer().isRegistered(new ObjectName(DirectMemoryPool.OBJECT_NAME)));
    }
}
