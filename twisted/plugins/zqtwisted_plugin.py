from twisted.application.service import ServiceMaker

zqworkers = ServiceMaker(
    "zqtwisted workers", "zqtwisted.tap", "Zulip queue workers on one Twisted reactor", "zqworkers"
)
