import attrs


@attrs.define
class Greeting:
    who: str

    def text(self) -> str:
        return f"hello, {self.who}"


def main():
    print(f"greeter: {Greeting('krait').text()} (attrs {attrs.__version__})", flush=True)
    return 0
