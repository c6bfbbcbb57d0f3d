# ruff: noqa: RUF001  (the sample is text in 13 languages: Cyrillic, dotless i and full-width signs are meant)
"""The language check measured: the identifier that ships (``datanets.language``: py3langid over a candidate set,
abstaining on short or unsure text) beside the stop-word counter it replaced, on a labelled sample of 13 languages
written here by hand (nothing is downloaded).

The sample: per language, short records (questions and instructions, as instruction data has them) and sentences,
turned into records of varied lengths: each short one alone, each sentence alone, a question with an answer (joined
by a newline, as ``record_text`` joins a record's fields), pairs of sentences and paragraphs of five. English gets
the most short records, with what real English data holds and an identifier can trip on: commands, code, numbers,
names, foreign words quoted in an English sentence, and sentences heavy in the short words English shares with
Portuguese ("a", "do", "as", "no"), which the stop-word counter took for Portuguese.

Reported for each detector:
- ``language_accuracy``: records whose detected language is their label, over all records (an undetermined record
  counts as not right);
- ``english_flagged``: English records the check would flag in an English Datanet (detected, and not English);
- ``false_flags``: records in a declarable language flagged in a Datanet that declares that language;
- ``mismatch_recall``: records in other languages flagged in an English Datanet;
- throughput, records per second in one process.
Then a sweep of the shipped identifier's two thresholds, the shipped pair marked. The last line is JSON.

Run from the repository root: OMP_NUM_THREADS=1 .venv/bin/python bench/language.py
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from datanets import language  # noqa: E402  (after sys.path; a pure module, no Django)

TARGET_ACCURACY = 0.95
DECLARABLE = ("en", "fr", "de", "es", "it", "pt", "nl")  # datanets.models.LANGUAGE_CHOICES

SHORT: dict[str, list[str]] = {
    "en": [
        "How do I reset my password?",
        "Summarise this paragraph.",
        "Write a haiku about rain.",
        "What is the capital of France?",
        "Translate to French: good morning",
        "Explain recursion to a child in two sentences.",
        "List three prime numbers.",
        "Is a tomato a fruit?",
        "Give me a pasta recipe with tomatoes and basil.",
        "Who wrote Pride and Prejudice?",
        "Name the largest planet in our solar system.",
        "Convert 5 km to miles.",
        "What does `git rebase -i HEAD~3` do?",
        "Sort this list in Python: [3, 1, 2]",
        "Fix the typo in this sentence.",
        "Why is the sky blue?",
        "Tell me a joke about cats.",
        "What time zone is Tokyo in?",
        "Describe a sunset in one line.",
        "How many legs does a spider have?",
        "Write a SQL query that counts users by country.",
        "What is 17 times 23?",
        "Rewrite this email to sound more polite.",
        "Define photosynthesis.",
        "Suggest a name for a bakery.",
        "What's the difference between a list and a tuple?",
        "Translate 'buenos días' into English.",
        "What does the French word 'boulangerie' mean?",
        "Is Lisbon the capital of Portugal?",
        "Recommend a book about Roman history.",
        "Give two synonyms for happy.",
        "Who painted the Mona Lisa?",
        "Explain what an API is.",
        "When did the Berlin Wall fall?",
        "Answer yes or no: is water wet?",
        "Make this sentence shorter.",
        "Plan a three-day trip to Rome.",
        "What are the symptoms of the flu?",
        "Calculate the area of a circle with radius 4 cm.",
        "Write a limerick about a dog named Max.",
        "Please proofread my cover letter.",
        "How do you boil an egg?",
        "What is machine learning?",
        "Count the vowels in 'banana'.",
        "Paraphrase: the meeting was postponed until Friday.",
        # plain English heavy in "a", "do", "as", "no": the words the stop-word counter shared with Portuguese
        "Use a comma as a separator, no spaces.",
        "Do a push-up, then do a sit-up, as many as you can.",
        "Is it a good idea to buy a car now, or do I wait a year?",
        "What do you do on a rainy day? Do a puzzle or read a book.",
        "A to Z: do a list of animals, one per letter, no repeats.",
        "Do as I say, not as I do.",
        "No, a cat is not a dog.",
        "What do I do if a dog bites me?",
        "Do a quick sketch of a house as a warm-up.",
        "Is a whale a fish? No, it is a mammal.",
    ],
    "fr": [
        "Comment réinitialiser mon mot de passe ?",
        "Quelle est la capitale de l'Espagne ?",
        "Écris un poème court sur la mer.",
        "Pourquoi le ciel est-il bleu ?",
        "Donne-moi une recette de crêpes.",
        "Résume ce texte en deux phrases.",
        "Qui a écrit Les Misérables ?",
        "Combien de jours y a-t-il dans une année bissextile ?",
    ],
    "de": [
        "Wie setze ich mein Passwort zurück?",
        "Was ist die Hauptstadt von Italien?",
        "Schreib ein kurzes Gedicht über den Herbst.",
        "Warum ist der Himmel blau?",
        "Gib mir ein Rezept für Apfelkuchen.",
        "Fasse diesen Text in zwei Sätzen zusammen.",
        "Wer hat den Faust geschrieben?",
        "Wie viele Tage hat ein Schaltjahr?",
    ],
    "es": [
        "¿Cómo restablezco mi contraseña?",
        "¿Cuál es la capital de Alemania?",
        "Escribe un poema corto sobre la lluvia.",
        "¿Por qué el cielo es azul?",
        "Dame una receta de tortilla de patatas.",
        "Resume este texto en dos frases.",
        "¿Quién escribió Cien años de soledad?",
        "¿Cuántos días tiene un año bisiesto?",
    ],
    "it": [
        "Come reimposto la mia password?",
        "Qual è la capitale della Francia?",
        "Scrivi una breve poesia sul mare.",
        "Perché il cielo è azzurro?",
        "Dammi una ricetta per il risotto ai funghi.",
        "Riassumi questo testo in due frasi.",
        "Chi ha scritto la Divina Commedia?",
        "Quanti giorni ha un anno bisestile?",
    ],
    "pt": [
        "Como faço para redefinir a minha senha?",
        "Qual é a capital da Espanha?",
        "Escreve um poema curto sobre o outono.",
        "Por que o céu é azul?",
        "Dá-me uma receita de pastel de nata.",
        "Resume este texto em duas frases.",
        "Quem escreveu Os Lusíadas?",
        "Quantos dias tem um ano bissexto?",
    ],
    "nl": [
        "Hoe stel ik mijn wachtwoord opnieuw in?",
        "Wat is de hoofdstad van België?",
        "Schrijf een kort gedicht over de zee.",
        "Waarom is de lucht blauw?",
        "Geef me een recept voor pannenkoeken.",
        "Vat deze tekst samen in twee zinnen.",
        "Wie schreef Het Achterhuis?",
        "Hoeveel dagen heeft een schrikkeljaar?",
    ],
    "ru": [
        "Как сбросить мой пароль?",
        "Какая столица Италии?",
        "Напиши короткое стихотворение о зиме.",
        "Почему небо голубое?",
        "Дай мне рецепт борща.",
        "Кратко перескажи этот текст.",
        "Кто написал «Войну и мир»?",
        "Сколько дней в високосном году?",
    ],
    "pl": [
        "Jak zresetować moje hasło?",
        "Jaka jest stolica Czech?",
        "Napisz krótki wiersz o jesieni.",
        "Dlaczego niebo jest niebieskie?",
        "Podaj mi przepis na pierogi.",
        "Streść ten tekst w dwóch zdaniach.",
        "Kto napisał Pana Tadeusza?",
        "Ile dni ma rok przestępny?",
    ],
    "tr": [
        "Şifremi nasıl sıfırlarım?",
        "Fransa'nın başkenti neresidir?",
        "Deniz hakkında kısa bir şiir yaz.",
        "Gökyüzü neden mavidir?",
        "Bana mercimek çorbası tarifi ver.",
        "Bu metni iki cümleyle özetle.",
        "Çalıkuşu romanını kim yazdı?",
        "Artık yılda kaç gün vardır?",
    ],
    "sv": [
        "Hur återställer jag mitt lösenord?",
        "Vad är huvudstaden i Norge?",
        "Skriv en kort dikt om vintern.",
        "Varför är himlen blå?",
        "Ge mig ett recept på kanelbullar.",
        "Sammanfatta den här texten i två meningar.",
        "Vem skrev Pippi Långstrump?",
        "Hur många dagar har ett skottår?",
    ],
    "zh": [
        "我怎么重置我的密码？",
        "意大利的首都是哪里？",
        "写一首关于秋天的短诗。",
        "为什么天空是蓝色的？",
        "给我一个饺子的做法。",
        "用两句话总结这段文字。",
        "《红楼梦》的作者是谁？",
        "闰年有多少天？",
    ],
    "ja": [
        "パスワードをリセットするにはどうすればいいですか？",
        "イタリアの首都はどこですか？",
        "秋についての短い詩を書いてください。",
        "なぜ空は青いのですか？",
        "カレーライスの作り方を教えてください。",
        "この文章を二文で要約してください。",
        "『源氏物語』を書いたのは誰ですか？",
        "うるう年は何日ありますか？",
    ],
}

SENTENCES: dict[str, list[str]] = {
    "en": [
        "The library opens at nine in the morning and closes at six in the evening on weekdays.",
        "Photosynthesis is the process by which green plants turn sunlight, water and carbon dioxide into sugar.",
        "To make a good cup of tea, warm the pot first and let the leaves steep for about four minutes.",
        "The Roman Empire reached its greatest extent under the emperor Trajan in the second century.",
        "A binary search halves the range it looks at on every step, so it needs about log n comparisons.",
        "Our team moved the weekly meeting to Thursday afternoon because several people travel on Mondays.",
        "Water boils at a lower temperature in the mountains, because the air pressure there is lower.",
        "She planted tomatoes, peppers and a row of basil along the south wall of the garden.",
        "If the server does not answer within thirty seconds, the client retries the request twice.",
        "The museum's new wing shows paintings from the Dutch Golden Age, including two by Vermeer.",
        "Regular exercise, enough sleep and a varied diet do more for health than most supplements.",
        "The train to Edinburgh was delayed by forty minutes after a signal failure near York.",
    ],
    "fr": [
        "La bibliothèque ouvre à neuf heures du matin et ferme à dix-huit heures en semaine.",
        "La photosynthèse permet aux plantes vertes de transformer la lumière du soleil en énergie.",
        "Pour réussir une bonne pâte à crêpes, il faut la laisser reposer au moins une heure.",
        "Le train pour Lyon a pris quarante minutes de retard à cause d'une panne de signalisation.",
        "Nous avons déplacé la réunion hebdomadaire au jeudi après-midi, car plusieurs collègues voyagent le lundi.",
        "L'eau bout à une température plus basse en montagne, parce que la pression de l'air y est plus faible.",
        "Elle a planté des tomates, des poivrons et une rangée de basilic le long du mur du jardin.",
        "Le musée présente une nouvelle salle consacrée aux peintres impressionnistes du dix-neuvième siècle.",
        "Si le serveur ne répond pas dans les trente secondes, le client renvoie la requête deux fois.",
        "Une alimentation variée et un sommeil suffisant comptent plus pour la santé que la plupart des compléments.",
    ],
    "de": [
        "Die Bibliothek öffnet werktags um neun Uhr morgens und schließt um achtzehn Uhr.",
        "Bei der Photosynthese wandeln grüne Pflanzen Sonnenlicht, Wasser und Kohlendioxid in Zucker um.",
        "Für einen guten Tee sollte man die Kanne vorwärmen und die Blätter etwa vier Minuten ziehen lassen.",
        "Der Zug nach Hamburg hatte wegen einer Signalstörung vierzig Minuten Verspätung.",
        "Wir haben das wöchentliche Treffen auf Donnerstagnachmittag verlegt, weil mehrere Kollegen montags reisen.",
        "In den Bergen kocht Wasser bei einer niedrigeren Temperatur, weil dort der Luftdruck geringer ist.",
        "Sie hat Tomaten, Paprika und eine Reihe Basilikum an der Südmauer des Gartens gepflanzt.",
        "Das Museum zeigt in seinem neuen Flügel Gemälde der Romantik, darunter zwei von Caspar David Friedrich.",
        "Wenn der Server nicht innerhalb von dreißig Sekunden antwortet, wiederholt der Client die Anfrage zweimal.",
        "Regelmäßige Bewegung und genug Schlaf tun mehr für die Gesundheit als die meisten Nahrungsergänzungsmittel.",
    ],
    "es": [
        "La biblioteca abre a las nueve de la mañana y cierra a las seis de la tarde entre semana.",
        "La fotosíntesis es el proceso por el cual las plantas verdes convierten la luz del sol en azúcar.",
        "Para preparar una buena tortilla, hay que pochar las patatas a fuego lento antes de añadir el huevo.",
        "El tren a Sevilla llegó con cuarenta minutos de retraso por una avería en la señalización.",
        "Hemos pasado la reunión semanal al jueves por la tarde, porque varios compañeros viajan los lunes.",
        "En la montaña el agua hierve a una temperatura más baja, porque allí la presión del aire es menor.",
        "Ella plantó tomates, pimientos y una fila de albahaca junto al muro sur del huerto.",
        "El museo abrió una nueva sala dedicada a los pintores del Siglo de Oro, entre ellos Velázquez.",
        "Si el servidor no responde en treinta segundos, el cliente vuelve a enviar la petición dos veces.",
        "Hacer ejercicio con regularidad y dormir lo suficiente ayudan más a la salud que casi todos los suplementos.",
    ],
    "it": [
        "La biblioteca apre alle nove del mattino e chiude alle sei di sera nei giorni feriali.",
        "La fotosintesi è il processo con cui le piante verdi trasformano la luce del sole in zuccheri.",
        "Per un buon risotto bisogna tostare il riso e aggiungere il brodo caldo poco alla volta.",
        "Il treno per Firenze ha accumulato quaranta minuti di ritardo per un guasto alla linea.",
        "Abbiamo spostato la riunione settimanale al giovedì pomeriggio, perché diversi colleghi viaggiano il lunedì.",
        "In montagna l'acqua bolle a una temperatura più bassa, perché la pressione dell'aria è minore.",
        "Lei ha piantato pomodori, peperoni e una fila di basilico lungo il muro del giardino.",
        "Il museo ha aperto una nuova sala dedicata ai pittori del Rinascimento, tra cui Botticelli.",
        "Se il server non risponde entro trenta secondi, il client ripete la richiesta due volte.",
        "Fare attività fisica con regolarità e dormire abbastanza aiutano la salute più di molti integratori.",
    ],
    "pt": [
        "A biblioteca abre às nove da manhã e fecha às seis da tarde durante a semana.",
        "A fotossíntese é o processo pelo qual as plantas verdes transformam a luz do sol em açúcar.",
        "Para fazer um bom arroz de pato, é preciso cozinhar o pato lentamente e guardar o caldo.",
        "O comboio para o Porto chegou com quarenta minutos de atraso por causa de uma avaria na sinalização.",
        "Mudámos a reunião semanal para quinta-feira à tarde, porque vários colegas viajam às segundas.",
        "Na montanha a água ferve a uma temperatura mais baixa, porque a pressão do ar é menor.",
        "Ela plantou tomates, pimentos e uma fila de manjericão junto ao muro do quintal.",
        "O museu abriu uma nova sala dedicada aos azulejos portugueses dos séculos dezassete e dezoito.",
        "Se o servidor não responder em trinta segundos, o cliente repete o pedido duas vezes.",
        "Fazer exercício com regularidade e dormir o suficiente ajudam mais a saúde do que quase todos os suplementos.",
    ],
    "nl": [
        "De bibliotheek gaat op werkdagen om negen uur open en sluit om zes uur 's avonds.",
        "Fotosynthese is het proces waarbij groene planten zonlicht, water en koolstofdioxide omzetten in suiker.",
        "Voor goede erwtensoep moet je de soep lang laten trekken, het liefst een dag van tevoren.",
        "De trein naar Groningen had veertig minuten vertraging door een seinstoring bij Zwolle.",
        "We hebben het wekelijkse overleg naar donderdagmiddag verplaatst, omdat een paar collega's op maandag reizen.",
        "In de bergen kookt water bij een lagere temperatuur, omdat de luchtdruk daar lager is.",
        "Zij heeft tomaten, paprika's en een rij basilicum langs de zuidmuur van de tuin geplant.",
        "Het museum toont in de nieuwe vleugel schilderijen uit de Gouden Eeuw, waaronder twee van Vermeer.",
        "Als de server niet binnen dertig seconden antwoordt, stuurt de client het verzoek nog twee keer.",
        "Regelmatig bewegen en genoeg slapen doen meer voor je gezondheid dan de meeste voedingssupplementen.",
    ],
    "ru": [
        "Библиотека открывается в девять утра и закрывается в шесть вечера по будним дням.",
        "Фотосинтез — это процесс, в котором зелёные растения превращают солнечный свет в сахар.",
        "Чтобы борщ получился вкусным, его нужно варить на медленном огне и дать ему настояться.",
        "Поезд в Санкт-Петербург опоздал на сорок минут из-за неисправности светофора.",
        "Мы перенесли еженедельную встречу на четверг, потому что несколько коллег уезжают по понедельникам.",
        "В горах вода закипает при более низкой температуре, потому что там ниже давление воздуха.",
        "Она посадила помидоры, перец и грядку базилика вдоль южной стены сада.",
        "Если сервер не отвечает в течение тридцати секунд, клиент повторяет запрос ещё два раза.",
    ],
    "pl": [
        "Biblioteka jest otwarta w dni powszednie od dziewiątej rano do szóstej wieczorem.",
        "Fotosynteza to proces, w którym zielone rośliny zamieniają światło słoneczne w cukier.",
        "Żeby pierogi się udały, ciasto trzeba cienko rozwałkować i dobrze skleić brzegi.",
        "Pociąg do Krakowa miał czterdzieści minut opóźnienia z powodu awarii sygnalizacji.",
        "Przenieśliśmy cotygodniowe spotkanie na czwartek, bo kilku kolegów podróżuje w poniedziałki.",
        "W górach woda wrze w niższej temperaturze, ponieważ ciśnienie powietrza jest tam niższe.",
        "Posadziła pomidory, paprykę i rząd bazylii wzdłuż południowego muru ogrodu.",
        "Jeśli serwer nie odpowie w ciągu trzydziestu sekund, klient ponawia żądanie dwa razy.",
    ],
    "tr": [
        "Kütüphane hafta içi sabah dokuzda açılır ve akşam altıda kapanır.",
        "Fotosentez, yeşil bitkilerin güneş ışığını şekere dönüştürdüğü süreçtir.",
        "İyi bir mercimek çorbası için soğanı önce tereyağında yavaşça kavurmak gerekir.",
        "Ankara treni sinyal arızası yüzünden kırk dakika gecikmeli geldi.",
        "Haftalık toplantıyı perşembe öğleden sonraya aldık, çünkü birkaç arkadaşımız pazartesi günleri yolda.",
        "Dağlarda su daha düşük bir sıcaklıkta kaynar, çünkü orada hava basıncı daha düşüktür.",
        "Bahçenin güney duvarı boyunca domates, biber ve bir sıra fesleğen dikti.",
        "Sunucu otuz saniye içinde yanıt vermezse istemci isteği iki kez daha gönderir.",
    ],
    "sv": [
        "Biblioteket öppnar klockan nio på morgonen och stänger klockan sex på kvällen på vardagar.",
        "Fotosyntes är den process där gröna växter omvandlar solljus, vatten och koldioxid till socker.",
        "För att kanelbullarna ska bli saftiga ska degen jäsa ordentligt innan de gräddas.",
        "Tåget till Göteborg blev fyrtio minuter försenat på grund av ett signalfel.",
        "Vi flyttade veckomötet till torsdag eftermiddag, eftersom flera kollegor reser på måndagar.",
        "I bergen kokar vatten vid en lägre temperatur, eftersom lufttrycket är lägre där.",
        "Hon planterade tomater, paprika och en rad basilika längs trädgårdens södra mur.",
        "Om servern inte svarar inom trettio sekunder skickar klienten förfrågan två gånger till.",
    ],
    "zh": [
        "图书馆工作日早上九点开门，晚上六点关门。",
        "光合作用是绿色植物把阳光、水和二氧化碳转化为糖的过程。",
        "包饺子的时候，面皮要擀得薄一点，边缘要捏紧。",
        "开往上海的火车因为信号故障晚点了四十分钟。",
        "因为好几位同事星期一出差，我们把每周的例会改到了星期四下午。",
        "在高山上，水的沸点更低，因为那里的气压比较低。",
        "她在花园的南墙边种了西红柿、辣椒和一排罗勒。",
        "如果服务器三十秒内没有响应，客户端会再重试两次。",
    ],
    "ja": [
        "図書館は平日の朝九時に開館し、夕方六時に閉館します。",
        "光合成とは、緑色の植物が日光と水と二酸化炭素から糖を作る仕組みです。",
        "おいしいカレーを作るには、玉ねぎを弱火でじっくり炒めることが大切です。",
        "大阪行きの電車は信号の故障で四十分遅れました。",
        "何人かの同僚が月曜日に出張するので、週例会議を木曜日の午後に変更しました。",
        "山の上では気圧が低いので、水はより低い温度で沸騰します。",
        "彼女は庭の南側の壁に沿って、トマトとピーマンとバジルを植えました。",
        "サーバーが三十秒以内に応答しない場合、クライアントはもう二回リクエストを送ります。",
    ],
}


def records() -> list[tuple[str, str, str]]:
    """``(language, kind, text)`` for every record of the sample: ``short`` (a question or an instruction alone),
    ``sentence``, ``question+answer`` (a short one and a sentence, joined by a newline as ``record_text`` joins a
    record's fields), ``pair`` (two sentences) and ``paragraph`` (five sentences)."""
    out: list[tuple[str, str, str]] = []
    for code, shorts in SHORT.items():
        sentences = SENTENCES[code]
        out.extend((code, "short", text) for text in shorts)
        out.extend((code, "sentence", text) for text in sentences)
        out.extend(
            (code, "question+answer", f"{question}\n{sentences[i % len(sentences)]}")
            for i, question in enumerate(shorts[:8])
        )
        out.extend((code, "pair", " ".join(sentences[i : i + 2])) for i in range(0, len(sentences) - 1, 2))
        out.extend((code, "paragraph", " ".join(sentences[i : i + 5])) for i in range(0, len(sentences) - 4, 3))
    return out


# The detector this replaced, as it was in datanets/checks.py (stop-word counts), kept here to compare.
LANGUAGE_MIN_HITS: Final = 4
LANGUAGE_MARGIN: Final = 1.5
STOPWORDS: Final[dict[str, frozenset[str]]] = {
    code: frozenset(words.split())
    for code, words in {
        "en": "the and of to in is that it for was with as on are this be by not you have but from they which",
        "fr": "le la les et des est une un que qui dans pour pas sur au avec ce il elle sont du ne nous vous mais",
        "de": "der die und das ist nicht ein eine zu den mit sich des auf für im dem auch es sie ich wir aber oder",
        "es": "el la los las y de que en un una es por para con no se del al lo como más pero sus le",
        "it": "il lo la gli le di che è e un una per non sono con del della nel alla anche ma come questo",
        "pt": "o a os as e de que do da em um uma para com não é se na no mais por dos das mas ao",
        "nl": "de het een en van is dat niet op te in voor met zijn ik je die er maar ook als aan wel",
    }.items()
}
_WORD_WEIGHT: Final = {
    word: 1 / sum(word in words for words in STOPWORDS.values()) for words in STOPWORDS.values() for word in words
}


def stopword_detector(text: str) -> str | None:
    scores: dict[str, float] = dict.fromkeys(STOPWORDS, 0.0)
    hits = 0
    for word in re.findall(r"\w+", text.lower()):
        weight = _WORD_WEIGHT.get(word)
        if weight is None:
            continue
        hits += 1
        for code, words in STOPWORDS.items():
            if word in words:
                scores[code] += weight
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    if hits < LANGUAGE_MIN_HITS or ranked[0][1] < LANGUAGE_MARGIN * ranked[1][1]:
        return None
    return ranked[0][0]


def shipped_detector(text: str) -> str | None:
    detected, _ = language.identify(text)
    return None if detected == language.UNDETERMINED else detected


def measure(detect: Callable[[str], str | None], sample: list[tuple[str, str, str]]) -> dict[str, object]:
    started = time.perf_counter()
    detected = [detect(text) for _, _, text in sample]
    seconds = time.perf_counter() - started
    right = [got == label for (label, _, _), got in zip(sample, detected, strict=True)]
    by_kind: dict[str, list[bool]] = {}
    for (_, kind, _), ok in zip(sample, right, strict=True):
        by_kind.setdefault(kind, []).append(ok)
    flagged = [got is not None and got != label for (label, _, _), got in zip(sample, detected, strict=True)]
    english = [f for (label, _, _), f in zip(sample, flagged, strict=True) if label == "en"]
    own = [f for (label, _, _), f in zip(sample, flagged, strict=True) if label in DECLARABLE]
    others = [got not in (None, "en") for (label, _, _), got in zip(sample, detected, strict=True) if label != "en"]
    wrong = Counter(
        f"{label}->{got}" for (label, _, _), got in zip(sample, detected, strict=True) if got not in (None, label)
    )
    return {
        "language_accuracy": round(sum(right) / len(right), 3),
        "undetermined": sum(got is None for got in detected),
        "wrong": sum(wrong.values()),
        "wrong_pairs": dict(wrong),
        "english_flagged": sum(english),
        "english_records": len(english),
        "false_flags": sum(own),
        "mismatch_recall": round(sum(others) / len(others), 3),
        "accuracy_by_kind": {kind: round(sum(oks) / len(oks), 3) for kind, oks in by_kind.items()},
        "records_per_s": round(len(sample) / seconds),
    }


def sweep(sample: list[tuple[str, str, str]]) -> list[tuple[int, float, float, int]]:
    """(min letters, min confidence, accuracy, English records flagged) for the shipped identifier's thresholds."""
    identifier = language._identifier()
    scored = [(label, len(language._LETTER.findall(text)), *identifier.classify(text)) for label, _, text in sample]
    rows = []
    for letters in (0, 5, 10, 15, 20):
        for confidence in (0.5, 0.8, 0.9, 0.95):
            got = [top if n >= letters and p >= confidence else None for _, n, top, p in scored]
            accuracy = sum(g == s[0] for g, s in zip(got, scored, strict=True)) / len(scored)
            english = sum(s[0] == "en" and g not in (None, "en") for g, s in zip(got, scored, strict=True))
            rows.append((letters, confidence, round(accuracy, 3), english))
    return rows


def main() -> None:
    sample = records()
    kinds = Counter(kind for _, kind, _ in sample)
    print(f"sample: {len(sample)} records in {len(SHORT)} languages ({', '.join(SHORT)}); {dict(kinds)}")
    print(f"shipped rule: {language.METHOD}")
    load = time.perf_counter()
    language._identifier()
    print(f"identifier loaded in {time.perf_counter() - load:.2f} s (once per process)")
    results = {"stopwords": measure(stopword_detector, sample), "py3langid": measure(shipped_detector, sample)}
    keys = [k for k in results["py3langid"] if k not in ("wrong_pairs", "accuracy_by_kind")]
    print(f"\n{'':22}{'stop words (before)':>22}{'py3langid (now)':>20}")
    for key in keys:
        print(f"{key:22}{results['stopwords'][key]!s:>22}{results['py3langid'][key]!s:>20}")
    for kind in kinds:
        before = results["stopwords"]["accuracy_by_kind"][kind]  # type: ignore[index]
        now = results["py3langid"]["accuracy_by_kind"][kind]  # type: ignore[index]
        print(f"{'  accuracy ' + kind:22}{before!s:>22}{now!s:>20}")
    for name, result in results.items():
        print(f"wrong labels, {name}: {result['wrong_pairs'] or 'none'}")
    print("\nthreshold sweep (py3langid over the candidates): min letters, min confidence -> accuracy, English flagged")
    for letters, confidence, accuracy, english in sweep(sample):
        shipped = letters == language.MIN_LETTERS and confidence == language.MIN_CONFIDENCE
        print(f"  {letters:>3} {confidence:>5}  {accuracy:.3f} {english:>3}{'   <- shipped' if shipped else ''}")
    now = results["py3langid"]
    summary = {
        "bench": "language",
        "records": len(sample),
        "languages": len(SHORT),
        "language_accuracy": now["language_accuracy"],
        "english_flagged": now["english_flagged"],
        "false_flags": now["false_flags"],
        "mismatch_recall": now["mismatch_recall"],
        "undetermined": now["undetermined"],
        "records_per_s": now["records_per_s"],
        "before_language_accuracy": results["stopwords"]["language_accuracy"],
        "before_english_flagged": results["stopwords"]["english_flagged"],
        "before_mismatch_recall": results["stopwords"]["mismatch_recall"],
        "target_accuracy_met": now["language_accuracy"] >= TARGET_ACCURACY,
        "target_english_flagged_met": now["english_flagged"] == 0,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
