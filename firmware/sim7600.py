# The SIMCom SIM7600 profile of the 4G path: command strings and reply formats of the module's TCP
# service (docs/modem.md). Another family is another class like this one, handed to Modem(profile=).


class SIM7600:
    """SIMCom SIM7600 (CE/E/SA, A7600 alike): the command strings and reply formats of the TCP
    service, so another family (Quectel EC20: QIOPEN/QISEND/QIRD) is a class like this one."""

    name = "SIM7600"
    # (command, required) after ATE0; optional ones may be missing on older firmware
    setup = (("AT+CMEE=1", True), ("AT+CEREG=1", False), ("AT+CTZU=1", False))
    rx_mode = "AT+CIPRXGET=1"  # manual receive: data waits in the module until asked for
    net_query = "AT+NETOPEN?"
    net_open = "AT+NETOPEN"
    net_close = "AT+NETCLOSE"
    NET = b"+NETOPEN: "
    NETCLOSE = b"+NETCLOSE: "
    OPEN = b"+CIPOPEN: "
    SEND = b"+CIPSEND: "
    RECV = b"+CIPRXGET: 2,"
    CLOSE = b"+CIPCLOSE: "
    URC_DATA = b"+CIPRXGET: 1,"  # +CIPRXGET: 1,<link>: data waits
    URC_CLOSED = b"+IPCLOSE: "  # +IPCLOSE: <link>,<reason>: closed by the peer or the network
    URC_NET = b"+CIPEVENT: "  # +CIPEVENT: NETWORK CLOSED UNEXPECTEDLY
    URC_SIM = (b"+SIMCARD: NOT AVAILABLE", b"+CPIN: NOT READY")
    ERRORS = (b"+CME ERROR: ", b"+CMS ERROR: ")
    IP_ERROR = b"+IP ERROR: "  # precedes ERROR with a text reason

    # command formats, filled in with % by the supervisor (Modem)
    apn = 'AT+CGDCONT=1,"IP","%s"'  # % apn
    open = 'AT+CIPOPEN=%d,"TCP","%s",%d'  # % (link, host, port)
    send = "AT+CIPSEND=%d,%d"  # % (link, n)
    recv = "AT+CIPRXGET=2,%d,%d"  # % (link, n)
    close = "AT+CIPCLOSE=%d"  # % link

    def error_reason(self, line):
        # +CME ERROR: 10 (numeric, CMEE=1) or "SIM not inserted" (verbose, CMEE=2)
        if line.endswith(b" 10") or b"SIM not inserted" in line:
            return "no_sim"
        return "error"
