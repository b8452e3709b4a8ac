"""Reports: matplotlib PNGs (:mod:`vae.reports.plots`) and a small HTML builder (:mod:`vae.reports.html`)
shared by the per-run report (:mod:`vae.reports.run_report`) and sweep reports."""
