"""The lab's attacks, one module per family; the registry is `trafficlab.scenarios`.

    base.py         Scenario, Variant (train/heldout), Run, Target, check_run
    scans.py        syn_scan, fin_scan, udp_scan (nmap, masscan, hping3)
    sweeps.py       host_sweep (nmap -sn, fping, zmap, masscan)
    floods.py       syn_flood, udp_flood, icmp_flood (hping3, t50, ping -f; spoofed sources)
    reflection.py   reflection via the lab servers (trafficlab.spoof, hping3 -a)
    slow_http.py    slow_http_dos (slowhttptest, trafficlab.slowloris)
    bruteforce.py   ssh_/ftp_/http_bruteforce (hydra, medusa, patator, ncrack)
"""
