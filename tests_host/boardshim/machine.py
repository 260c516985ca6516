"""Stand-in for `machine` on the ESP32 and the Pico W: Pin, ADC (scripted readings) and
lightsleep (moves the clock on at once). See _boardsim.py."""

import _boardsim as _sim


class Pin:
    IN = 1
    OUT = 3

    def __init__(self, id, *args, **kwargs):
        self.id = id

    def __repr__(self):
        return "Pin(%r)" % (self.id,)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, source, *, atten=None):
        if _sim.BOARD == "esp32":
            if not isinstance(source, Pin):
                raise TypeError("ADC on the ESP32 takes a Pin")
            if atten is None:
                atten = self.ATTN_0DB
        elif not (isinstance(source, Pin) or source in (0, 1, 2, 3, 4)):
            raise ValueError("invalid ADC channel")
        self.source = source
        self.atten = atten
        _sim.log("adc", source=source.id if isinstance(source, Pin) else source, atten=atten)

    def read_u16(self):
        if _sim.BOARD == "esp32":
            raise NotImplementedError("the scenario scripts read_uv() on the ESP32")
        return _sim.sample("read_u16")

    def read_uv(self):
        if _sim.BOARD != "esp32":
            raise AttributeError("read_uv")  # the Pico W's ADC has no read_uv()
        return _sim.sample("read_uv")


def lightsleep(time_ms=None):
    if _sim.BOARD != "esp32":
        raise NotImplementedError("only the ESP32 app uses lightsleep here")
    if time_ms is None:
        raise NotImplementedError("lightsleep without a timeout would never end here")
    _sim.log("lightsleep", ms=_sim.require_int(time_ms), wifi_active=_sim.wifi["active"])
    if _sim.wifi["active"]:  # the ESP-IDF keeps no Wi-Fi connection through light sleep
        _sim.wifi.update(connected=False, status="idle")
    _sim.advance_ms(time_ms)


def idle():
    pass


def reset():
    raise _sim.ScenarioEnd("machine.reset()")
