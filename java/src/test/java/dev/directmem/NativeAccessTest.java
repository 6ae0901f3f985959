package dev.directmem;

import static org.junit.jupiter.api.Assertions.*;

import java.util.List;
import org.junit.jupiter.api.Test;

/** JDK 24+ native-access rules: denied, the failure names the flag to use. */
class NativeAccessTest {
    @Test
    void underIllegalNativeAccessDenyTheFailureNamesTheFlag() throws Exception {
        if (Runtime.version().feature() < 24) {
            // JDK 17-23 have no such mode: the same child must simply work.
            Support.Outcome o = Support.java(List.of(), "dev.directmem.PrintLimit");
            assertEquals(0, o.exit(), o.output());
            return;
        }
        Support.Outcome o = Support.java(List.of("--illegal-native-access=deny"), "dev.directmem.PrintLimit");
        assertNotEquals(0, o.exit(), o.output());
        assertTrue(o.output().contains("--enable-native-access=ALL-UNNAMED"), o.output());
        assertTrue(o.output().contains("Enable-Native-Access"), o.output());
    }
}
