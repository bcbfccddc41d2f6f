"""mmcli on the web: HTML reports of result files (:mod:`mmcli.web.report`) and the HTTP service."""
